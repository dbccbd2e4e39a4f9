"""The summary: one row per run, methods named right, runs from notebooks and `relief-nb run` alike."""

import subprocess
import sys

import pandas as pd
import pytest

from relief_nb.cli import main
from relief_nb.common.paths import runs_folder
from relief_nb.experiments.config import ExperimentConfig, override
from relief_nb.experiments.run import Run
from relief_nb.experiments.training import TrainConfig
from relief_nb.notebooks.session import Session
from relief_nb.reporting.tables import METHOD_LABELS, gather_results, method_table, summary_table

TINY = dict(synthetic=True, n_train=300, n_test=100, val_size=60, scoring_size=32, iterations=1,
            pretrain=TrainConfig(1, batch_size=60), retrain=TrainConfig(1, batch_size=60))


def _session(tmp_path, notebook="lenet-mnist", **params) -> Session:
    return Session(notebook, {"profile": "smoke", "results_dir": str(tmp_path), "data_dir": str(tmp_path / "none"),
                              "progress": False, **params})


def test_summary_names_every_method_lists_each_run_once_and_finds_cli_runs(tmp_path):
    # a notebook's NNrelief run and its three baselines
    session = _session(tmp_path, baselines=True)
    reference = Run(ExperimentConfig.of(**TINY), session.runs_dir, progress=False)
    reference.run()
    by_method = session.run_baselines({"lenet300-mnist": reference})
    # the tour runs the same experiment: the same run folder, not a second row
    assert session._execute(reference.config, "tour").folder == reference.folder
    # a run made by `relief-nb run`, with another seed
    assert main(["run", "lenet300-mnist", "--profile", "smoke", "-p", "synthetic=True", "-p", "seed=1",
                 "-p", "iterations=1", "--results-dir", str(tmp_path), "--no-progress"]) == 0

    results = gather_results(runs_folder(tmp_path, "smoke"))
    assert len(results) == 5 and results.run.is_unique
    assert sorted(results.method) == sorted(["NNrelief", "NNrelief", *[METHOD_LABELS[m] for m in by_method[
        "lenet300-mnist"] if m != "relief"]])
    assert set(results[results.method == "NNrelief"].seed) == {0, 1}
    table = summary_table(results)
    ours = table[~table.method.str.startswith("published")]
    assert len(ours) == 5 and ours.method.str.contains("SYNTHETIC").all()
    assert not table.method.str.contains("NNrelief").sum() > 2  # baselines are not labelled NNrelief
    assert table.method.str.startswith("published").sum() == 5  # LeNet-300-100's published rows, once each


def test_a_baseline_is_one_run_whoever_starts_it(tmp_path):
    """The reference is a run name, not a path: from Jupyter (relative) and the CLI (absolute), one run."""
    base = ExperimentConfig.of(**TINY)
    folder = runs_folder(tmp_path, "smoke")
    ref = Run(base, folder, progress=False)
    ref.run()
    cfg = override(base, method="random", reference=ref.folder.parent.name)
    assert Run(cfg, folder).folder == Run(cfg, folder.resolve()).folder
    Run(cfg, folder, progress=False).run()
    assert len(gather_results(folder)) == 2


def test_method_table_reports_error_percent_beside_relief_compression():
    m = pd.DataFrame({"iteration": [0, 1], "test_error": [0.02, 0.03], "compression": [1.0, 4.0]})
    table = method_table("x", {"relief": m, "random": m.assign(test_error=[0.02, 0.10])})
    assert table.columns.tolist() == ["experiment", "iteration", "NNrelief", "random", "compression"]
    assert table.random.tolist() == [2.0, 10.0] and table.compression.tolist() == [1.0, 4.0]


def test_two_processes_on_one_run_neither_crash_nor_corrupt_it(tmp_path):
    """The second waits on the run's lock, then reads the finished run back instead of racing it."""
    args = ["-m", "relief_nb.cli", "run", "lenet300-mnist", "--profile", "smoke", "-p", "synthetic=True",
            "-p", "iterations=1", "--results-dir", str(tmp_path), "--no-progress"]
    procs = [subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    results = gather_results(runs_folder(tmp_path, "smoke"))
    assert len(results) == 1
    tables = [out.split("run folder:")[1].splitlines()[1:] for out, _ in outputs]
    assert tables[0] == tables[1]  # the same metrics printed by both


def test_published_crossings_finds_the_first_iteration_at_each_published_compression():
    from relief_nb.reporting.tables import published_crossings

    # a fabricated aggregate (not a result): compression 1, 10, 30, 60 over iterations 0-3, two seeds
    agg = pd.DataFrame({"experiment": "lenet300-mnist", "method": "relief", "alpha_fc": 0.95,
                        "iteration": [0, 1, 2, 3], "n_seeds": 2, "compression_mean": [1.0, 10.0, 30.0, 60.0],
                        "compression_std": 0.1, "test_error_pct_mean": [1.6, 1.7, 1.8, 2.1],
                        "test_error_pct_std": 0.05, "flops_reduction_mean": 1.0, "val_error_pct_mean": 1.0})
    table = published_crossings(agg, "lenet300-100").set_index("published compression")
    assert table.loc[12, "first iteration reaching it"] == 2 and table.loc[12, "our error % (mean)"] == 1.8
    assert table.loc[56, "first iteration reaching it"] == 3
    assert pd.isna(table.loc[68, "first iteration reaching it"])  # never reached
    by_label = published_crossings(agg.assign(method="NNrelief"), "lenet300-100")  # the aggregate's label
    pd.testing.assert_frame_equal(by_label, table.reset_index()[by_label.columns])
    with pytest.raises(ValueError, match="one setting"):
        published_crossings(pd.concat([agg, agg.assign(alpha_fc=0.9)]), "lenet300-100")


def test_iteration_table_formats_mean_and_std_and_flags_missing_seeds():
    from relief_nb.reporting.tables import iteration_table, markdown

    # a fabricated aggregate (not a result): two methods, the second with one seed at iteration 1
    agg = pd.DataFrame({"experiment": "x", "method": ["A", "A", "B", "B"], "alpha_fc": 0.95,
                        "iteration": [0, 1, 0, 1], "n_seeds": [2, 2, 2, 1],
                        "compression_mean": [1.0, 6.25, 1.0, 6.0], "compression_std": [0.0, 0.31, 0.0, float("nan")],
                        "test_error_pct_mean": [1.5, 1.734, 1.5, 2.0], "test_error_pct_std": [0.1, 0.02, 0.1, None]})
    table = iteration_table(agg)
    assert list(table.columns) == ["iteration", "A compression", "A test error %", "B compression",
                                   "B test error %", "B seeds"]  # A has its 2 seeds at every iteration
    row = table.set_index("iteration").loc[1]
    assert (row["A compression"], row["A test error %"], row["B compression"], row["B test error %"]) == \
        ("6.2 ± 0.3x", "1.73 ± 0.02", "6.0x", "2.00")  # one seed: the mean alone
    text = markdown(table).splitlines()
    assert text[1] == "|---|---|---|---|---|---|" and text[3].startswith("| 1 | 6.2 ± 0.3x |")
    with pytest.raises(ValueError, match="one setting"):
        iteration_table(pd.concat([agg, agg.assign(alpha_fc=0.9)]))


def test_error_at_compression_interpolates_in_log_compression_within_each_methods_range():
    from relief_nb.reporting.tables import error_at_compression

    # a fabricated aggregate (not a result)
    agg = pd.DataFrame({"experiment": "x", "method": ["A"] * 3 + ["B"] * 2, "iteration": [0, 1, 2, 0, 1],
                        "n_seeds": 3, "compression_mean": [1.0, 10.0, 100.0, 1.0, 20.0],
                        "test_error_pct_mean": [1.0, 2.0, 3.0, 1.5, 4.0]})
    table = error_at_compression(agg, [10, 100 ** 0.75, 50, 1000])
    assert table.loc["A"].iloc[:3].tolist() == pytest.approx([2.0, 2.5, 1 + 2 * 0.849485], abs=1e-5)
    assert pd.isna(table.loc["A", 1000]) and pd.isna(table.loc["B", 50])  # beyond what the runs reached
    assert table.loc["B", 10] == pytest.approx(1.5 + 2.5 * (1 / 1.30103), abs=1e-5)
