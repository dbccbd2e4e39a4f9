"""The GPU check: one prepared script, at most 10 minutes on one CUDA GPU. The project never needs a GPU; this
checks that it works on one. On the device machine (its python3 holds a CUDA torch; dask and papermill are absent):

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out $OUT          # carry data/mnist for the real MNIST run

1. **Scores on CUDA equal the CPU ones**: NNrelief's per-layer scores of LeNet-300-100, LeNet-5, VGG-like and
   ResNet-20 (seeded weights, one seeded batch), ``allclose`` at rtol 1e-3; and the masks of one pass may differ
   only where a threshold falls between two float-rounded scores (at most 0.1 % of the entries).
2. **The prune-pass benchmark on the GPU** (``bench_prune_pass.py --device cuda``): ratio to a forward pass.
3. **The LeNet-300-100 paper-profile run on CUDA**, for at most ``--minutes`` (it checkpoints every epoch, so a
   later call continues it), on real MNIST when ``data/mnist`` is there, else on the synthetic stand-in (said so).
4. **The smoke notebooks on CUDA** when papermill is importable (carry its wheels); otherwise skipped, said so.

Everything printed also goes to ``<out>/gpu_check.md``.
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
sys.path.insert(0, str(ROOT))

LINES: list[str] = []


def say(text: str) -> None:
    print(text, flush=True)
    LINES.append(text)


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
        good = all(torch.allclose(a[k], b[k].cpu(), rtol=1e-3, atol=1e-6) for k in a) and differ <= 1e-3
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check"))
    parser.add_argument("--minutes", type=float, default=4.0, help="time box of the paper-profile run")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself (no GPU checked)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this script checks the GPU path and has nothing to do here", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name() if args.device == "cuda" else "DRY RUN ON THE CPU (no GPU checked)"
    say(f"# GPU check: torch {torch.__version__}, {where}\n")
    say("## CUDA scores vs CPU\n\n| model | max relative score difference | masks differing | |\n|---|---|---|---|")
    scores_ok = check_scores(args.device)
    say("\n## Prune pass vs forward on the GPU\n")
    import bench_prune_pass

    quick = ["--quick"] if args.device == "cpu" else []
    rows = bench_prune_pass.main(["--device", args.device, "--layouts", "channels_last", "--repeat", "3", *quick])
    say(json.dumps(rows, indent=1))
    say("\n## LeNet-300-100, paper profile, on CUDA\n")
    run_paper_lenet300(args.minutes, args.out / "results", args.device)
    say("\n## Smoke notebooks on CUDA\n")
    run_notebooks(args.out, args.device)
    (args.out / "gpu_check.md").write_text("\n".join(LINES) + "\n")
    return 0 if scores_ok else 1


if __name__ == "__main__":
    sys.exit(main())
