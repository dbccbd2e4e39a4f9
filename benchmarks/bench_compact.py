"""One retraining epoch of a pruned model: compact (removed units sliced away) against masked-dense, in one run.

Target (issue 15): the compact epoch is faster by at least 60 % of the FLOPs reduction (LeNet-5 at 5.5x fewer
FLOPs: an epoch at least 3.3x faster). Masks: the README's LeNet-5 run when its folder exists (``results/runs``),
ResNet-20 after one pass at alpha 0.9 (untrained, random images: no real CIFAR run exists on these machines).
The epoch itself runs on a synthetic data set of the right shape (its cost does not depend on the pixels).
    python benchmarks/bench_compact.py            # LeNet-5 and ResNet-20, 6000 images
    python benchmarks/bench_compact.py --threads 1  # as a sweep's worker trains (one torch thread)
    python benchmarks/bench_compact.py --quick    # tiny, for the test suite

``--run FOLDER`` times the epoch at the masks of every iteration of one run (its ``iterations/XX/model.pt``):
each retraining stage has the same number of epochs, so the ratio of the summed masked epochs to the summed
compact ones is what compact retraining saves over the run's whole retraining, measured in one run.
    python benchmarks/bench_compact.py --threads 1 --run results/runs/<experiment>/seed_0
"""

from __future__ import annotations

import argparse
import copy
import warnings
from pathlib import Path

import torch
from common import DATA, RUNS, interleaved_best, markdown_table, pruned_model

from relief_nb.data.datasets import synthetic_dataset
from relief_nb.experiments.run import Run
from relief_nb.experiments.training import TrainConfig, make_optimizer, train_epoch
from relief_nb.graph.compact import CompactModel
from relief_nb.graph.structure import trace_model
from relief_nb.models.zoo import create_model, input_shape_of
from relief_nb.pruning.metrics import summary
from relief_nb.pruning.relief import ReliefConfig, ReliefWarning, relief_prune

DATASET_OF = {"lenet300-100": "mnist", "lenet5": "mnist", "resnet20": "cifar10"}


def masked_model(name: str) -> tuple[torch.nn.Module, str]:
    if name in ("lenet300-100", "lenet5"):
        return pruned_model(name, RUNS)
    model = create_model(name, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReliefWarning)
        relief_prune(model.eval(), torch.rand(256, *input_shape_of(name)), ReliefConfig(0.9, 0.9))
    return model, "one pass at alpha 0.9 on random images, untrained"


def measure(name: str, n: int, repeat: int, masked: torch.nn.Module | None = None, source: str = "",
            multiples: tuple[int, ...] = (1,)) -> dict:
    ds = synthetic_dataset(DATASET_OF[name], n_train=n, n_test=10)
    if masked is None:
        masked, source = masked_model(name)
    masked = masked.to(memory_format=torch.channels_last)  # as experiments train it
    graph = trace_model(masked, input_shape_of(name))
    flops = summary(masked, graph)["flops_reduction"]
    compacts = {m: CompactModel(masked, graph, m) for m in multiples}
    for compact in compacts.values():
        compact.check(input_shape_of(name))
    cfg = TrainConfig(1, batch_size=120)
    device = torch.device("cpu")

    def epoch(model: torch.nn.Module):
        model = copy.deepcopy(model)
        opt, _ = make_optimizer(model, cfg)
        g = torch.Generator().manual_seed(0)
        return lambda: train_epoch(model, ds.train_x, ds.train_y, ds, cfg, opt, device, g)

    label = {m: "compact" if m == 1 else f"compact_x{m}" for m in multiples}  # x8: units rounded up to 8s
    best = interleaved_best({"masked": epoch(masked), **{label[m]: epoch(c.model) for m, c in compacts.items()}},
                            repeat)
    row = {"model": name, "images": n, "masked_epoch_s": f"{best['masked']:.3f}"}
    for m, compact in compacts.items():
        speedup = best["masked"] / best[label[m]]
        row |= {f"{label[m]}_epoch_s": f"{best[label[m]]:.3f}", f"speedup_{label[m]}": f"{speedup:.2f}x",
                f"{label[m]}_params": f"{compact.parameter_fraction():.1%}"}
    first = label[multiples[0]]
    speedup = best["masked"] / best[first]
    return row | {"flops_reduction": f"{flops:.2f}x", "speedup_over_flops": f"{speedup / flops:.0%}",
                  "masks": source}


def over_run(folder: Path, n: int, repeat: int, multiples: tuple[int, ...]) -> list[dict]:
    """One row per retraining stage of the run in ``folder`` (the masks it retrained at), then the whole run's."""
    run = Run.at(folder, data_dir=DATA)
    iterations = sorted(int(p.parent.name) for p in (folder / "iterations").glob("*/model.pt"))
    stages = [k for k in iterations if k > 0]
    if not stages:
        raise SystemExit(f"{folder}: no iterations/XX/model.pt after iteration 0; is this a run folder?")
    rows = []
    for k in stages:
        row = measure(run.config.model, n, repeat, run.load_model(k), f"iteration {k} of {folder.parent.name}",
                      multiples)
        rows.append({"iteration": k, **{c: v for c, v in row.items()
                                        if c not in ("model", "images", "speedup_over_flops", "masks")}})
    total: dict = {"iteration": f"all {len(stages)}"}
    masked = sum(float(r["masked_epoch_s"]) for r in rows)
    for column in rows[0]:
        if column.endswith("_epoch_s"):
            total[column] = f"{sum(float(r[column]) for r in rows):.3f}"
        elif column.startswith("speedup_"):
            seconds = sum(float(r[column.removeprefix("speedup_") + "_epoch_s"]) for r in rows)
            total[column] = f"{masked / seconds:.2f}x"
        elif column != "iteration":
            total[column] = ""
    return [*rows, total]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", nargs="*", default=["lenet5", "resnet20"])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--run", type=Path, help="a run folder: time every retraining stage's masks")
    parser.add_argument("--multiples", nargs="+", type=int, default=[1, 8],
                        help="copies to time, units per layer rounded up to each multiple (1: exact)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n, repeat = (240, 1) if args.quick else (6000, 3)
    multiples = tuple(args.multiples)
    rows = (over_run(args.run, n, repeat, multiples) if args.run else
            [measure(name, n, repeat, multiples=multiples) for name in args.models])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads"
          f"{f', run {args.run}, {n} images per epoch' if args.run else ''}")
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
