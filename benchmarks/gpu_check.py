"""The GPU acceptance script: one command, at most 10 minutes on one CUDA GPU. The project never needs a GPU; this
checks that it works on one, and CI dry-runs it on the CPU (``--device cpu --quick``). On the device machine (its
python3 holds a CUDA torch; dask and papermill are absent unless their wheels travel with the tree):

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out $OUT          # carry data/mnist for the real MNIST run

1. **Every registry model and the test zoo pruned, exported and compacted on CUDA**: a crash, an export that
   differs, or compaction refused (the run would fall back to masked retraining) is a failure.
2. **Scores on CUDA equal the CPU ones**: NNrelief's per-layer scores (seeded weights, one seeded batch) within
   rtol 1e-4 (the pass runs in strict float32 whatever the TF32 settings), and the masks of one pass may differ
   only where a threshold falls between two float-rounded scores (at most 0.1 % of the entries).
3. **The prune-pass benchmark on the GPU** (``bench_prune_pass.py --device cuda``): ratio to a forward pass.
4. **Epoch times**: the device-resident loop against the one it replaced (``bench_train_loop.py``), and several
   LeNet-300-100 runs sharing the GPU (``--runs-per-gpu`` processes) against one.
5. **The LeNet-300-100 paper-profile run on CUDA**, for at most ``--minutes`` (it checkpoints every epoch, so a
   later call continues it), on real MNIST when ``data/mnist`` is there, else on the synthetic stand-in (said so).
6. **The smoke notebooks on CUDA** when papermill is importable (carry its wheels); otherwise skipped, said so.

Everything printed also goes to ``<out>/gpu_check.md``; the exit code is 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # the test zoo (tests/nets.py)
sys.path.insert(0, str(ROOT))

LINES: list[str] = []


def say(text: str) -> None:
    print(text, flush=True)
    LINES.append(text)


def check_models(device: str, quick: bool) -> bool:
    """Prune, export and compact every registry model and the test zoo on ``device``; one line per model."""
    import warnings

    import nets

    from relief_nb import (
        CompactModel,
        ReliefConfig,
        create_model,
        export_pruned,
        input_shape_of,
        list_models,
        relief_prune,
        trace_model,
    )

    names = list_models()[:3] if quick else list_models()
    say("| model | pruned | exported | compaction | |\n|---|---|---|---|---|")
    ok = True
    for name in [*names, *(list(nets.ZOO)[:2] if quick else nets.ZOO)]:
        torch.manual_seed(0)
        if name in nets.ZOO:
            factory, shape, dense = nets.ZOO[name]
            model = factory()
            ignore = tuple(dense(model))
        else:
            shape, ignore = input_shape_of(name), ()
            model = create_model(name, 10, seed=0, input_shape=shape)
        model = model.eval().to(device)
        x = torch.rand(32, *shape, generator=torch.Generator().manual_seed(1)).to(device)
        steps = {}
        try:
            relief_prune(model, x, ReliefConfig(alpha_conv=0.9, alpha_fc=0.9), ignore=ignore)
            steps["pruned"] = "ok"
            export_pruned(model, shape, ignore=ignore)
            steps["exported"] = "ok"
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                CompactModel(model, trace_model(model, shape, ignore)).check(shape, x[:8])
            steps["compaction"] = "accepted"
        except Exception as err:  # reported, the other models go on
            steps["error"] = f"{type(err).__name__}: {str(err)[:120]}"
        good = "error" not in steps
        ok &= good
        say(f"| {name} | {steps.get('pruned', '-')} | {steps.get('exported', '-')} | {steps.get('compaction', '-')} |"
            f" {'ok' if good else 'FAILED ' + steps['error']} |")
    return ok


def runs_per_gpu(device: str, processes: int, quick: bool) -> None:
    """``processes`` LeNet-300-100 epochs at once on one device against one alone: throughput ratio."""
    import subprocess

    code = ("import sys, time, torch; sys.path.insert(0, 'benchmarks'); "
            "from relief_nb import TrainConfig, create_model, make_optimizer, synthetic_dataset, train_epoch; "
            f"torch.set_num_threads(1); d = torch.device('{device}'); "
            f"ds = synthetic_dataset('mnist', n_train={2000 if quick else 55000}, n_test=10, seed=0); "
            "x, y = ds.train_x.to(d), ds.train_y.to(d); m = create_model('lenet300-100', 10, seed=0).to(d); "
            "cfg = TrainConfig(1); o, _ = make_optimizer(m, cfg); "
            "train_epoch(m, x, y, ds, cfg, o, d, torch.Generator().manual_seed(0))")

    def wall(n: int) -> float:
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT) for _ in range(n)]
        if any(p.wait() for p in procs):
            raise RuntimeError("a training process failed")
        return time.perf_counter() - start

    one, many = wall(1), wall(processes)
    say(f"{processes} runs sharing {device}: {many:.1f} s for {processes} epochs (with start-up) against {one:.1f} s "
        f"for one: throughput {processes * one / many:.2f}x one run's")


def check_scores(device: str) -> bool:
    from relief_nb.core.masks import mask_snapshot
    from relief_nb.models.zoo import create_model, input_shape_of
    from relief_nb.pruning.relief import ReliefConfig, relief_prune, score_layers

    ok = True
    for name in ("lenet300-100", "lenet5", "vgg-like", "resnet20"):
        torch.manual_seed(0)
        cpu = create_model(name, seed=0).eval()
        gpu = create_model(name, seed=0).eval().to(device)
        x = torch.rand(256, *input_shape_of(name), generator=torch.Generator().manual_seed(1))
        a, b = score_layers(cpu, x), score_layers(gpu, x.to(device))
        worst = max(float(((a[k] - b[k].cpu()).abs() / a[k].abs().clamp_min(1e-12)).max()) for k in a)
        config = ReliefConfig(0.9, 0.95)
        relief_prune(cpu, x, config)
        relief_prune(gpu, x.to(device), config)
        ma, mb = mask_snapshot(cpu), mask_snapshot(gpu)
        differ = sum(int((ma[k] != mb[k].cpu()).sum()) for k in ma) / sum(v.numel() for v in ma.values())
        good = all(torch.allclose(a[k], b[k].cpu(), rtol=1e-4, atol=1e-6) for k in a) and differ <= 1e-3
        ok &= good
        say(f"| {name} | {worst:.2e} | {differ:.4%} | {'ok' if good else 'DIFFERENT'} |")
    return ok


def run_paper_lenet300(minutes: float, results: Path, device: str) -> None:
    from relief_nb.experiments.presets import experiment_config
    from relief_nb.experiments.run import Run

    real = (ROOT / "data" / "mnist" / "train-images-idx3-ubyte").exists()
    config = experiment_config("lenet300-mnist", "paper", **({} if real else {"synthetic": True}))
    run = Run(config, results, data_dir=ROOT / "data", device=device, progress=False)
    start = time.perf_counter()
    epochs = 0
    while time.perf_counter() - start < 60 * minutes and not run.finished():
        with contextlib.suppress(KeyboardInterrupt):  # ten epochs at a time, so the time box is kept
            run.run(stop_after_epochs=10)
        epochs += 10
        run = Run(config, results, data_dir=ROOT / "data", device=device, progress=False)
    rows = run.metrics() if (run.folder / "metrics.csv").exists() else None
    say(f"{'real MNIST' if real else 'SYNTHETIC stand-in (data/mnist not carried)'}: about {epochs} epochs in "
        f"{(time.perf_counter() - start) / 60:.1f} min, {60 * (time.perf_counter() - start) / max(epochs, 1) / 60:.2f}"
        f" s per epoch; finished: {run.finished()}")
    if rows is not None:
        say(rows[["iteration", "compression", "test_error", "wall_time_s"]].to_string(index=False))


def run_notebooks(out: Path, device: str) -> None:
    if importlib.util.find_spec("papermill") is None:
        say("papermill is not importable here: smoke notebooks skipped (carry papermill's wheels to run them)")
        return
    from relief_nb.notebooks.batch import execute_notebook

    for name in ("lenet-mnist", "tour", "cifar10"):
        start = time.perf_counter()
        execute_notebook(name, "smoke", {"device": device}, out / f"{name}.ipynb",
                         {"data_dir": str(ROOT / "data"), "results_dir": str(out / "results")}, progress=False)
        say(f"notebook {name} (smoke, {device}): {time.perf_counter() - start:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check"))
    parser.add_argument("--minutes", type=float, default=3.0, help="time box of the paper-profile run")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself (no GPU checked)")
    parser.add_argument("--runs-per-gpu", type=int, default=8, help="processes sharing the device in check 4")
    parser.add_argument("--quick", action="store_true", help="small sizes (the CPU dry run in CI)")
    args = parser.parse_args(argv)
    LINES.clear()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this script checks the GPU path and has nothing to do here", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name() if args.device == "cuda" else "DRY RUN ON THE CPU (no GPU checked)"
    say(f"# GPU check: {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {where}\n")
    say("## Every model pruned, exported and compacted\n")
    models_ok = check_models(args.device, args.quick)
    say("\n## CUDA scores vs CPU\n\n| model | max relative score difference | masks differing | |\n|---|---|---|---|")
    scores_ok = check_scores(args.device)
    quick = ["--quick"] if args.quick else []
    say("\n## Prune pass vs forward on the GPU\n")
    import bench_prune_pass
    import bench_train_loop

    rows = bench_prune_pass.main(["--device", args.device, "--layouts", "channels_last", "--repeat", "3", *quick])
    say(json.dumps(rows, indent=1))
    say("\n## Epoch times\n")
    say(json.dumps(bench_train_loop.main(["--device", args.device, *quick]), indent=1))
    runs_per_gpu(args.device, 2 if args.quick else args.runs_per_gpu, args.quick)
    say("\n## LeNet-300-100, paper profile, on the device\n")
    run_paper_lenet300(args.minutes, args.out / "results", args.device)
    say("\n## Smoke notebooks on the device\n")
    if args.quick:
        say("skipped in the quick dry run (the notebooks' own tests run them on the CPU)")
    else:
        run_notebooks(args.out, args.device)
    ok = models_ok and scores_ok
    say(f"\n**{'PASSED' if ok else 'FAILED'}**")
    (args.out / "gpu_check.md").write_text("\n".join(LINES) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
