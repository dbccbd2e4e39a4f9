"""Run every benchmark and write benchmarks/results.md (the table the README quotes)."""

from __future__ import annotations

import sys
from pathlib import Path

import bench_compact
import bench_inference
import bench_mask_overhead
import bench_prune_pass
import bench_subnormals
import bench_sweep
import bench_train_loop
import torch
from common import markdown_table

HERE = Path(__file__).resolve().parent


def main() -> None:
    quick = "--quick" in sys.argv
    args = ["--quick"] if quick else []
    sections = [
        ("Scoring-and-pruning pass vs one forward pass (1000 images)", bench_prune_pass.main(args)),
        ("One training epoch: masked vs dense", bench_mask_overhead.main(args)),
        ("One retraining epoch: compact vs masked-dense", bench_compact.main(args)),
        ("CPU inference: exported vs dense (after pruning)", bench_inference.main(args)),
        ("A sweep's runs: one by one in-process vs on the default Dask LocalCluster", bench_sweep.main(args)),
        ("One training step: subnormal weights and Adam state vs flushed", bench_subnormals.main(args)),
        ("One epoch and one evaluation: the device-resident loop vs the loop it replaced", bench_train_loop.main(args)),
    ]
    text = [f"# Benchmarks\n\ntorch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
            "reproduce with `make bench` (or `python benchmarks/run_all.py`).\n"]
    for title, rows in sections:
        text.append(f"## {title}\n\n{markdown_table(rows)}\n")
    if not quick:
        (HERE / "results.md").write_text("\n".join(text))
        print(f"written {HERE / 'results.md'}")


if __name__ == "__main__":
    main()
