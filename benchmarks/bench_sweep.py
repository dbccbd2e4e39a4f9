"""A sweep's 8 runs one by one in this process (torch using every core, then one thread) against the same runs as
Dask tasks on the default LocalCluster (one single-threaded worker process per core), measured in one run, each in
a fresh folder.

Grid: LeNet-300-100, alpha_fc 0.9 / 0.95 x seeds 0 / 1 x NNrelief + global magnitude. Real MNIST when
``data/mnist`` exists (cpu profile, all 55,000 training images, pretraining 2 epochs, 2 iterations of 1 epoch),
otherwise, and in ``--quick`` mode, the smoke profile on the synthetic stand-in (``--quick``: 2 of the runs).
The cluster's time includes starting it (a sweep pays that too). Expect up to the number of cores against one
thread; against torch's own threads the gain is what intra-op threading leaves on the table (little for a model
whose epoch streams the data set through memory, as LeNet-300-100's does).
    python benchmarks/bench_sweep.py
    python benchmarks/bench_sweep.py --quick    # tiny, for the test suite
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from common import markdown_table, seconds

from relief_nb.sweeps.sweep import execute_run, expand_grid, run_sweep

ROOT = Path(__file__).resolve().parent.parent


def grid(quick: bool, data_dir: Path) -> dict:
    real = not quick and (data_dir / "mnist").exists()
    g = dict(experiment="lenet300-mnist", alpha_fc=[0.9, 0.95], seeds=[0, 1], methods=["relief", "magnitude_global"])
    if quick:
        g.update(alpha_fc=[0.9], seeds=[0])
    if real:
        # all 55,000 training images: on 10,000 the 8 runs take 7 s one by one and the cluster's start-up dominates
        return {**g, "profile": "cpu", "params": dict(iterations=2, pretrain_epochs=2,
                                                      pretrain_milestones=[1], retrain_epochs=1,
                                                      retrain_milestones=[1], target_compression="None")}
    return {**g, "profile": "smoke", "params": {"synthetic": True}}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    args = parser.parse_args(argv)
    g = grid(args.quick, args.data_dir)
    runs = expand_grid(**g, data_dir=args.data_dir)
    cores = os.cpu_count() or 1
    data = "synthetic stand-in" if runs[0].config.data.synthetic else "real MNIST"
    with tempfile.TemporaryDirectory() as serial_dir, tempfile.TemporaryDirectory() as dask_dir:
        def one_by_one(threads: int, folder: str) -> None:
            for run in runs:  # references come first (expand_grid's order)
                execute_run(run.config, folder, args.data_dir, "cpu", threads=threads)

        t_serial = seconds(lambda: one_by_one(cores, serial_dir))
        with tempfile.TemporaryDirectory() as single_dir:
            t_single = seconds(lambda: one_by_one(1, single_dir))
        previous = os.environ.pop("DASK_SCHEDULER_ADDRESS", None)  # the default cluster, whatever the shell says
        try:
            t_dask = seconds(lambda: run_sweep(**g, results_dir=dask_dir, data_dir=args.data_dir, device="cpu",
                                               progress=False))
        finally:
            if previous is not None:
                os.environ["DASK_SCHEDULER_ADDRESS"] = previous
    rows = [{"mode": f"one by one, in-process ({cores} torch threads)", "runs": len(runs), "data": data,
             "wall_s": f"{t_serial:.1f}", "speedup": "1.00x"},
            {"mode": "one by one, in-process (1 torch thread)", "runs": len(runs), "data": data,
             "wall_s": f"{t_single:.1f}", "speedup": f"{t_serial / t_single:.2f}x"},
            {"mode": f"default LocalCluster ({cores} workers x 1 thread, start-up included)", "runs": len(runs),
             "data": data, "wall_s": f"{t_dask:.1f}", "speedup": f"{t_serial / t_dask:.2f}x"}]
    print(f"torch {torch.__version__}, {cores} cores")
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
