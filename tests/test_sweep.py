"""Sweeps on Dask (relief_nb.sweeps.sweep): same metrics as in-process runs, fault tolerance, no rework, external
schedulers, failures reported, the CLI. Smoke-size runs on the synthetic stand-in (a few seconds each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from relief_nb.cli import main
from relief_nb.experiments.checkpoints import load_checkpoint
from relief_nb.experiments.presets import experiment_config
from relief_nb.experiments.run import Run
from relief_nb.sweeps.sweep import aggregate, execute_run, expand_grid, load_grid, plot_sweep, run_done, run_sweep

ROOT = Path(__file__).resolve().parent.parent
GRID = dict(experiment="lenet300-mnist", alpha_fc=[0.9, 0.95], seeds=[0, 1], methods=["relief", "magnitude_global"],
            profile="smoke", params={"synthetic": True})


def comparable(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics.drop(columns=[c for c in metrics.columns if c.startswith("wall")]).reset_index(drop=True)


@pytest.fixture(scope="module")
def client():
    """A 2-worker LocalCluster of single-threaded processes, shared by the tests that need one."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def in_process(tmp_path_factory) -> dict[str, pd.DataFrame]:
    """GRID's runs one by one in this process (one torch thread, as in a task): run name -> metrics."""
    runs_dir = tmp_path_factory.mktemp("in_process")
    out = {}
    for run in expand_grid(**GRID):
        out[run.name] = comparable(execute_run(run.config, runs_dir, ROOT / "data", "cpu", threads=1))
    return out


@pytest.fixture(scope="module")
def first_sweep(client, tmp_path_factory) -> tuple[pd.DataFrame, Path]:
    results = tmp_path_factory.mktemp("sweep")
    df = run_sweep(**GRID, scheduler=client, results_dir=results, data_dir=ROOT / "data", device="cpu",
                   progress=False)
    return df, results


def test_grid_on_cluster_matches_in_process_runs(first_sweep, in_process):
    df, results = first_sweep
    assert df.attrs["submitted"] == 8 and df.attrs["failed"] == 0
    assert df.run.nunique() == 8 and set(df.status) == {"done"}
    assert set(df.method) == {"NNrelief", "magnitude (global)"}
    assert sorted(in_process) == sorted(df.run.unique())
    for name, expected in in_process.items():
        got = comparable(pd.read_csv(results / "smoke" / "runs" / name / "metrics.csv"))
        pd.testing.assert_frame_equal(got, expected)
        rows = df[df.run == name].sort_values("iteration")
        assert list(rows.iteration) == list(expected.iteration)
        assert list(rows.test_error_pct) == pytest.approx(list(100 * expected.test_error))
    # baselines prune to NNrelief's sparsity: each sits at its reference's compression
    relief = df[df.method == "NNrelief"].set_index(["alpha_fc", "seed", "iteration"]).compression
    glob = df[df.method == "magnitude (global)"].set_index(["alpha_fc", "seed", "iteration"]).compression
    assert glob.sort_index().to_numpy() == pytest.approx(relief.sort_index().to_numpy(), rel=0.02)


def test_second_invocation_does_no_training(first_sweep):
    df, results = first_sweep
    files = {p: p.stat().st_mtime_ns for p in (results / "smoke" / "runs").rglob("*") if p.is_file()}
    # an unreachable scheduler: any attempt to submit would fail, so nothing is even connected to
    again = run_sweep(**GRID, scheduler="tcp://127.0.0.1:9", results_dir=results, data_dir=ROOT / "data",
                      progress=False)
    assert again.attrs["submitted"] == 0 and again.attrs["scheduler"] is None
    assert set(again.status) == {"cached"}
    assert {p: p.stat().st_mtime_ns for p in files} == files
    cols = ["run", "iteration", "test_error_pct", "compression"]
    pd.testing.assert_frame_equal(again[cols], df[cols])


def test_aggregate_and_figure(first_sweep):
    df, _ = first_sweep
    agg = aggregate(df)
    assert len(agg) == 2 * 2 * 3  # methods x alpha_fc x iterations (seeds averaged)
    assert set(agg.n_seeds) == {2}
    one = agg[(agg.method == "NNrelief") & (agg.alpha_fc == 0.9) & (agg.iteration == 2)].iloc[0]
    runs = df[(df.method == "NNrelief") & (df.alpha_fc == 0.9) & (df.iteration == 2)]
    assert one.test_error_pct_mean == pytest.approx(runs.test_error_pct.mean())
    assert one.compression_std == pytest.approx(runs.compression.std())
    fig = plot_sweep(agg, mark="SYNTHETIC stand-in: not a result")
    assert "LeNet-300-100" in fig._suptitle.get_text()
    labels = fig.legends[0].get_texts()
    assert any("published" in t.get_text() for t in labels) and any("NNrelief" in t.get_text() for t in labels)
    assert len(fig.axes) == 2  # one panel per alpha_fc


def test_report_has_each_settings_iterations_crossings_and_wall_time(first_sweep):
    from relief_nb.sweeps.sweep import sweep_report

    df, _ = first_sweep
    report = sweep_report(df)
    assert report.startswith("**Synthetic stand-in data")
    assert report.count("## lenet300-mnist (alpha_conv = 0.9, alpha_fc = ") == 2  # one section per alpha_fc
    section = report.split("alpha_fc = 0.95)")[1]
    header = next(line for line in section.splitlines() if line.startswith("| iteration"))
    assert header == ("| iteration | NNrelief compression | NNrelief test error % | magnitude (global) compression "
                      "| magnitude (global) test error % |")  # every iteration has both seeds: no seeds column
    rows = df[(df.method == "NNrelief") & (df.alpha_fc == 0.95) & (df.iteration == 1)]
    mean, std = rows.test_error_pct.mean(), rows.test_error_pct.std()
    assert f"| 1 | {rows.compression.mean():.1f} ± {rows.compression.std():.1f}x | {mean:.2f} ± {std:.2f} |" in section
    assert "Dynamic Network Surgery (Guo et al. 2016) | 56x at 1.99 % |" in section
    assert "| method | 2x |" in section and "at equal compression" in section
    seconds = df[(df.method == "NNrelief") & (df.alpha_fc == 0.95)].wall_time_s.sum()
    assert seconds > 0 and f"| NNrelief | 2 | 0 | {seconds:,.0f} s |" in section


def test_collect_reads_unfinished_runs_without_running(first_sweep, tmp_path):
    import shutil

    df, results = first_sweep
    shutil.copytree(results / "smoke", tmp_path / "smoke")
    runs = tmp_path / "smoke" / "runs"
    relief = sorted(df[(df.method == "NNrelief") & (df.alpha_fc == 0.9)].run.unique())
    glob = sorted(df[(df.method == "magnitude (global)") & (df.alpha_fc == 0.9)].run.unique())
    (runs / relief[1] / "checkpoint.pt").unlink()  # stopped after iteration 1: no finished checkpoint, 2 rows
    metrics = pd.read_csv(runs / relief[1] / "metrics.csv")
    metrics[metrics.iteration <= 1].to_csv(runs / relief[1] / "metrics.csv", index=False)
    shutil.rmtree(runs / glob[1])  # never started
    got = run_sweep(**GRID, scheduler="tcp://127.0.0.1:9", results_dir=tmp_path, data_dir=ROOT / "data",
                    progress=False, execute=False, save=True, name="collected")
    assert got.attrs["submitted"] == 0 and got.attrs["scheduler"] is None
    status = got.drop_duplicates("run").set_index("run").status
    assert status[relief[1]] == "partial" and status[glob[1]] == "not started"
    assert (status.drop([relief[1], glob[1]]) == "cached").all()
    assert sorted(got[got.run == relief[1]].iteration) == [0, 1]
    agg = aggregate(got).set_index(["method", "alpha_fc", "iteration"])
    assert agg.loc[("NNrelief", 0.9, 1), "n_seeds"] == 2 and agg.loc[("NNrelief", 0.9, 2), "n_seeds"] == 1
    assert agg.loc[("magnitude (global)", 0.9, 1), "n_seeds"] == 1
    report = (tmp_path / "smoke" / "sweeps" / "collected" / "report.md").read_text()
    assert f"not counted: {glob[1]} (not started)" in report and "| NNrelief seeds |" in report
    assert f"unfinished: {relief[1]} (iterations 0-1 so far" in report


def test_figure_turns_to_a_log_error_axis_only_when_one_method_is_far_worse():
    # a fabricated aggregate (not a result): the second method's error grows 10x
    agg = pd.DataFrame({"experiment": "lenet300-mnist", "network": "lenet300-100", "dataset": "mnist",
                        "synthetic": True, "alpha_fc": 0.95, "method": ["NNrelief"] * 3 + ["random"] * 3,
                        "iteration": [0, 1, 2] * 2, "n_seeds": 3, "compression_mean": [1.0, 10.0, 50.0] * 2,
                        "compression_std": 0.0, "test_error_pct_mean": [1.6, 1.8, 2.0, 1.6, 5.0, 16.0],
                        "test_error_pct_std": 0.1})
    assert plot_sweep(agg).axes[0].get_yscale() == "log"
    assert plot_sweep(agg[agg.method == "NNrelief"]).axes[0].get_yscale() == "linear"


def test_invalid_point_is_reported_not_raised():
    runs = expand_grid("lenet300-mnist", alpha_fc=[0.9, 1.5], methods=["relief", "random"], profile="smoke",
                       params={"synthetic": True})
    bad = [r for r in runs if r.config is None]
    assert len(runs) == 4 and len(bad) == 2
    assert all("alpha_fc" in r.error for r in bad)
    assert "reference" in next(r.error for r in bad if r.coords["method"] == "random")


def test_killed_worker_resumes_to_identical_results(client, tmp_path):
    params = {"synthetic": True, "pretrain_epochs": 20, "pretrain_batch_size": 8}
    grid = dict(experiment="lenet300-mnist", alpha_fc=0.9, seeds=0, methods="relief", profile="smoke", params=params)
    (run,) = expand_grid(**grid)
    expected = comparable(execute_run(run.config, tmp_path / "plain", ROOT / "data", "cpu", threads=1))

    results = tmp_path / "sweep"
    folder = results / "smoke" / "runs" / run.name
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(df=run_sweep(
        **grid, scheduler=client, results_dir=results, data_dir=ROOT / "data", device="cpu", progress=False)))
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while True:  # wait until the run has checkpointed a few epochs
            assert time.monotonic() < deadline, "the run never started"
            if (folder / "checkpoint.pt").exists():
                state = load_checkpoint(folder / "checkpoint.pt")
                if state["phase"] == "pretrain" and state["epoch"] >= 3:
                    break
            time.sleep(0.05)
        worker_pids = set(client.run(os.getpid).values())
        pid = int((folder / ".lock").read_text())  # the run's lock holder: the worker executing the task
        assert pid in worker_pids
        os.kill(pid, signal.SIGKILL)
    finally:
        thread.join(timeout=180)
    assert not thread.is_alive()
    df = out["df"]
    assert set(df.status) == {"done"}, df[df.status != "done"].error.tolist()
    assert pid not in set(client.run(os.getpid).values())  # that worker really died (its nanny made a new one)
    pd.testing.assert_frame_equal(comparable(pd.read_csv(folder / "metrics.csv")), expected)
    assert run_done(folder)


def test_external_scheduler(in_process, tmp_path, monkeypatch):
    dask = str(Path(sys.executable).parent / "dask")
    scheduler_file = tmp_path / "scheduler.json"
    procs = []
    try:
        procs.append(subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                       "--scheduler-file", str(scheduler_file)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([dask, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                                       "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)  # scheduler=None picks it up
        grid = {**GRID, "alpha_fc": 0.9, "seeds": 0}
        df = run_sweep(**grid, results_dir=tmp_path / "results", data_dir=ROOT / "data", device="cpu",
                       progress=False)
        assert df.attrs["scheduler"] == address and df.attrs["submitted"] == 2
        assert set(df.status) == {"done"}, df[df.status != "done"].error.tolist()
        for name in df.run.unique():
            got = pd.read_csv(tmp_path / "results" / "smoke" / "runs" / name / "metrics.csv")
            pd.testing.assert_frame_equal(comparable(got), in_process[name])
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_cli_reports_failed_runs_and_exits_1(client, tmp_path, capsys):
    rc = main(["sweep", "--experiment", "lenet300-mnist", "--alpha-fc", "0.9", "--seeds", "0", "--methods",
               "relief", "random", "--profile", "smoke", "-p", "synthetic=True", "-p", "pretrain_lr=[0.001,1e30]",
               "--retries", "0", "--scheduler", client.scheduler.address, "--results-dir", str(tmp_path),
               "--name", "failing", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "4 runs: 2 ran, 0 already finished, 2 failed" in out
    df = pd.read_csv(tmp_path / "smoke" / "sweeps" / "failing" / "sweep.csv")
    per_run = df.drop_duplicates("run").set_index(["method", "pretrain_lr"])
    assert per_run.loc[("NNrelief", 0.001), "status"] == per_run.loc[("random", 0.001), "status"] == "done"
    assert per_run.loc[("NNrelief", 1e30), "status"] == "failed"
    error = per_run.loc[("NNrelief", 1e30), "error"]
    assert error.startswith("TrainingDiverged") and "pretrain_lr" in error  # the run's own message
    assert "reference run" in per_run.loc[("random", 1e30), "error"]
    assert "FAILED" in err
    assert set(aggregate(df).pretrain_lr) == {0.001}  # failed runs are left out of the aggregate


def test_the_whole_grid_is_checked_before_any_worker_starts(tmp_path, capsys):
    """A value no run of the grid can use (a config error, or a validation split larger than the training data)
    is refused in one line naming the points, before a cluster starts or anything is written."""
    for bad in ("alpha_fc=[0.9,1.5]", "val_size=[300,5000]"):
        rc = main(["sweep", "--experiment", "lenet300-mnist", "--seeds", "0", "1", "--methods", "relief", "random",
                   "--profile", "smoke", "-p", "synthetic=True", "-p", bad, "--scheduler", "tcp://127.0.0.1:1",
                   "--results-dir", str(tmp_path), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "nothing was run" in err, err
        assert ("alpha_fc=1.5" if "alpha" in bad else "val_size=5000") in err and "seed=1" in err
        assert not any(tmp_path.iterdir())


def test_sweep_progress_counts_epochs(tmp_path):
    from relief_nb.sweeps.cluster import epochs_done, epochs_planned

    cfg = experiment_config("lenet300-mnist", "smoke", synthetic=True, iterations=2, pretrain_epochs=2,
                            retrain_epochs=3, retrain_milestones=(2,))
    assert epochs_planned(cfg) == 2 + 2 * 3
    run = Run(cfg, tmp_path, ROOT / "data", device="cpu", progress=False)
    assert epochs_done(run.folder, cfg) == 0  # not started
    for stop, total in ((1, 1), (3, 4)):  # 4: two of pretraining, two of iteration 1's retraining
        with pytest.raises(KeyboardInterrupt):
            Run(cfg, tmp_path, ROOT / "data", device="cpu", progress=False).run(stop_after_epochs=stop)
        assert epochs_done(run.folder, cfg) == total
    run.run()
    assert epochs_done(run.folder, cfg) == epochs_planned(cfg)


@pytest.mark.slow
def test_cli_on_toml_grid_with_default_local_cluster(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    grid = tmp_path / "tiny.toml"
    grid.write_text('experiment = "lenet300-mnist"\nalpha_fc = [0.9]\nseeds = [0]\nmethods = ["relief", "random"]\n'
                    'profile = "smoke"\n\n[params]\nsynthetic = true\npretrain_milestones = [1]\n'
                    'target_compression = "None"\n')
    rc = main(["sweep", str(grid), "--results-dir", str(tmp_path / "results"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    folder = tmp_path / "results" / "smoke" / "sweeps" / "tiny"
    assert {p.name for p in folder.iterdir()} >= {"sweep.csv", "aggregate.csv", "lenet300-mnist.png"}
    assert "test_error_pct_mean" in out and "2 runs: 2 ran, 0 already finished, 0 failed" in out
    assert "SYNTHETIC" in out or "synthetic" in out
    df = pd.read_csv(folder / "sweep.csv")
    assert set(df.status) == {"done"} and set(df.method) == {"NNrelief", "random"}


def test_readme_grid_file_expands_to_48_real_runs():
    grid = load_grid(ROOT / "sweeps" / "lenet300-mnist.toml")
    assert grid["name"] == "lenet300-mnist"
    experiment = grid.pop("experiment")
    kwargs = {k: grid[k] for k in ("alpha_conv", "alpha_fc", "seeds", "methods", "profile", "params") if k in grid}
    runs = expand_grid(experiment, data_dir=ROOT / "data", **kwargs)
    assert len(runs) == 48 and all(r.config is not None and not r.config.data.synthetic for r in runs)
    assert len(grid["alpha_fc"]) >= 4 and min(grid["alpha_fc"]) >= 0.8 and max(grid["alpha_fc"]) <= 0.99
    assert sum(r.config.method.name == "relief" for r in runs) == 12


def test_run_is_a_plain_folder(tmp_path):
    """A run made by a sweep is the same folder `relief-nb run` and notebooks use (named by its config)."""
    cfg = experiment_config("lenet300-mnist", "smoke", synthetic=True, iterations=0, pretrain_epochs=1)
    execute_run(cfg, tmp_path, ROOT / "data", "cpu")
    assert run_done(tmp_path / Run(cfg, data_dir=ROOT / "data").run_name())
    assert not Run(cfg, tmp_path).metrics().empty


def test_default_seeds_and_methods_are_one_run():
    (run,) = expand_grid("lenet300-mnist", profile="smoke", params={"synthetic": True})
    assert run.config is not None and run.config.seed == 0 and run.config.method.name == "relief"
    runs = expand_grid("lenet300-mnist", seeds=(0, 1), methods=("relief", "random"), profile="smoke",
                       params={"synthetic": True})
    assert sorted((r.config.seed, r.config.method.name) for r in runs) == [(0, "random"), (0, "relief"), (1, "random"),
                                                                      (1, "relief")]


@pytest.mark.parametrize("grid_file", sorted((Path(__file__).resolve().parent.parent / "sweeps").glob("*.toml")),
                         ids=lambda p: p.name)
def test_the_shipped_sweep_files_name_known_experiments_profiles_and_methods(grid_file):
    from relief_nb.experiments.presets import EXPERIMENTS, PROFILES
    from relief_nb.pruning.methods import list_methods
    from relief_nb.sweeps.sweep import load_grid

    grid = load_grid(grid_file)
    assert grid["experiment"] in EXPERIMENTS and grid.get("profile", "cpu") in PROFILES
    assert set(grid["methods"]) <= set(list_methods())
