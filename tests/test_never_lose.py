"""Never lose a result: a notebook that fails leaves the previous executed copy byte-identical (the failed one is
kept beside it), and a run whose training diverges stops at once, in one line, resumable, its last good
iteration kept."""

from __future__ import annotations

import hashlib

from relief_nb.cli import main
from relief_nb.notebooks import batch


def fake_papermill(monkeypatch, fail: bool):
    """papermill writes its output cell by cell, so a failing notebook leaves a partial file where it writes."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    def execute(template, output, **kwargs):
        with open(output, "w") as f:
            f.write('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5, "partial": true}')
        if fail:
            raise PapermillExecutionError(3, 3, "boom", "RuntimeError", "boom", [])

    monkeypatch.setattr(pm, "execute_notebook", execute)


def test_a_failed_notebook_leaves_the_previous_one_byte_identical(tmp_path, monkeypatch, capsys):
    output = tmp_path / "smoke" / "lenet-mnist" / "lenet-mnist.ipynb"
    output.parent.mkdir(parents=True)
    output.write_text('{"good": "a previous, complete run"}')
    before = hashlib.sha256(output.read_bytes()).hexdigest()
    fake_papermill(monkeypatch, fail=True)
    rc = main(["notebook", "lenet-mnist", "--profile", "smoke", "--results-dir", str(tmp_path), "--no-progress"])
    assert rc == 1
    assert hashlib.sha256(output.read_bytes()).hexdigest() == before
    failed = output.with_name("lenet-mnist.failed.ipynb")
    assert failed.exists() and '"partial": true' in failed.read_text()
    assert not list(output.parent.glob(".*.running.ipynb"))
    assert "kept as" in capsys.readouterr().err


def test_a_complete_notebook_replaces_the_previous_one(tmp_path, monkeypatch):
    output = tmp_path / "out" / "tour.ipynb"
    output.parent.mkdir()
    output.write_text("old")
    fake_papermill(monkeypatch, fail=False)
    batch.execute_notebook("tour", "smoke", {}, output, progress=False)
    assert '"partial": true' in output.read_text() and not list(output.parent.glob(".*"))


def small(**kw):
    from relief_nb import ExperimentConfig, TrainConfig

    base = dict(model="lenet300-100", synthetic=True, n_train=400, n_test=100, val_size=100, scoring_size=64,
                iterations=2, pretrain=TrainConfig(1, batch_size=100), retrain=TrainConfig(2, batch_size=100))
    return ExperimentConfig.of(**{**base, **kw})


def test_a_diverging_pretraining_stops_at_once_and_records_nothing(tmp_path):
    import pytest

    from relief_nb import Run, TrainConfig
    from relief_nb.experiments.checkpoints import load_checkpoint
    from relief_nb.experiments.training import TrainingDiverged

    run = Run(small(pretrain=TrainConfig(3, lr=1e30, batch_size=100)), tmp_path, progress=False)
    with pytest.raises(TrainingDiverged, match=r"epoch 1: the loss is (nan|inf).*-p pretrain_lr=") as err:
        run.run()
    assert "\n" not in str(err.value)
    assert run.metrics().empty  # nothing recorded as a result
    state = load_checkpoint(run.checkpoint_path)
    assert state["phase"] == "pretrain" and state["epoch"] == 0  # resumable from the last good epoch


def test_a_diverging_retraining_keeps_the_last_good_iteration(tmp_path):
    import pytest

    from relief_nb import Run, TrainConfig
    from relief_nb.experiments.training import TrainingDiverged

    run = Run(small(retrain=TrainConfig(2, lr=1e30, batch_size=100)), tmp_path, progress=False)
    with pytest.raises(TrainingDiverged, match="iteration 0 stays its result"):
        run.run()
    assert run.metrics().iteration.tolist() == [0]


def test_the_cli_says_it_in_one_line_with_exit_1(tmp_path, capsys):
    rc = main(["run", "lenet300-mnist", "--profile", "smoke", "-p", "synthetic=True", "-p", "pretrain_lr=1e30",
               "--results-dir", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: training diverged") and err.count("\n") == 1, err


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    import pytest

    from relief_nb.common.files import atomic_write

    target = tmp_path / "metrics.csv"
    atomic_write(target, "iteration\n0\n")

    def half_then_full_disk(f):
        f.write(b"iteration\n0\n1")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, writer=half_then_full_disk)
    assert target.read_text() == "iteration\n0\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_a_runs_results_are_never_half_written(tmp_path, monkeypatch):
    """A full disk while a run records iteration 1 leaves metrics.csv and layers.csv as iteration 0 wrote them."""
    import pytest

    from relief_nb import Run
    from relief_nb.common import files

    run = Run(small(iterations=1), tmp_path, progress=False)
    run.run()
    before = {n: (run.folder / n).read_bytes() for n in ("metrics.csv", "layers.csv", "metrics.json")}
    extended = Run(small(iterations=2), tmp_path, progress=False)
    real = files.os.replace

    def full_disk(src, dst):
        if str(dst).endswith(("metrics.csv", "layers.csv", "metrics.json")) and "iterations" not in str(dst):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", full_disk)
    with pytest.raises(OSError):
        extended.run()
    monkeypatch.setattr(files.os, "replace", real)
    assert {n: (run.folder / n).read_bytes() for n in before} == before
    assert not list(run.folder.glob(".*.tmp"))


def test_a_sweep_with_nothing_finished_never_replaces_a_report(tmp_path):
    import pandas as pd
    import pytest

    from relief_nb.sweeps.report import save_sweep

    (tmp_path / "report.md").write_text("a real report\n")
    empty = pd.DataFrame({"experiment": ["lenet300-mnist"], "iteration": pd.array([pd.NA], dtype="Int64")})
    with pytest.warns(UserWarning, match="kept the existing tables and report"):
        save_sweep(empty, tmp_path)
    assert (tmp_path / "report.md").read_text() == "a real report\n"


def test_a_sweep_refuses_an_unknown_device_before_any_worker(tmp_path, capsys):
    rc = main(["sweep", "--experiment", "lenet300-mnist", "--profile", "smoke", "--device", "tpu",
               "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "device must be" in err and err.count("\n") == 1 and not any(tmp_path.iterdir())


def test_help_lists_every_subcommand(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("list", "fetch", "run", "sweep", "compare", "notebook", "reproduce", "migrate"):
        assert f"{command}:" in out or f"{command} /" in out or f"/ {command}:" in out, command


def test_the_gallery_is_rebuilt_with_the_folders_the_user_gives(tmp_path, monkeypatch):
    """``notebook --gallery`` writes the folders given on the command line into the notebooks; folders not given
    are left to resolve where the notebook is opened (the committed gallery stays portable)."""
    seen = {}

    def execute(name, profile, extra, output, folders=None, progress=True):
        seen[name] = dict(folders or {})
        return output

    monkeypatch.setattr(batch, "execute_notebook", execute)
    data, results = tmp_path / "my data", tmp_path / "my results"
    data.mkdir()
    assert main(["notebook", "tour", "--gallery", str(tmp_path / "gallery"), "--profile", "smoke",
                 "--data-dir", str(data), "--results-dir", str(results), "--no-progress"]) == 0
    assert seen["tour"] == {"data_dir": str(data.resolve()), "results_dir": str(results.resolve())}
    assert main(["notebook", "tour", "--gallery", str(tmp_path / "gallery"), "--profile", "smoke",
                 "--data-dir", str(data), "--no-progress"]) == 0
    assert seen["tour"] == {"data_dir": str(data.resolve())}


def test_a_stage_of_zero_epochs_is_refused_in_one_line(tmp_path, capsys):
    import pytest

    from relief_nb import TrainConfig

    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        TrainConfig(0)
    for value in ("0", "-3"):
        rc = main(["run", "lenet300-mnist", "--profile", "smoke", "-p", "synthetic=True", "-p",
                   f"retrain_epochs={value}", "--results-dir", str(tmp_path)])
        err = capsys.readouterr().err
        assert rc == 2 and "retrain_epochs" in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())


def _comparable(df):
    return df.drop(columns=["wall_time_s"])


def _interrupted(folder):
    """A run stopped in the retraining of iteration 2 (epochs: 1 pretraining, 2 + 1 retraining)."""
    import pytest

    from relief_nb import Run

    run = Run(small(), folder, progress=False)
    with pytest.raises(KeyboardInterrupt):
        run.run(stop_after_epochs=4)
    assert (run.folder / "iterations" / "01" / "rng.pt").exists() and not (run.folder / "iterations" / "02").exists()
    return run


def test_a_deleted_checkpoint_resumes_from_the_last_finished_iteration(tmp_path):
    import pandas as pd
    import pytest

    from relief_nb import Run

    expected = Run(small(), tmp_path / "whole", progress=False)
    expected.run()
    run = _interrupted(tmp_path / "lost")
    run.checkpoint_path.unlink()
    with pytest.warns(UserWarning, match="resumed from iteration 1, the last finished one"):
        got = Run(small(), tmp_path / "lost", progress=False).run()
    pd.testing.assert_frame_equal(_comparable(got), _comparable(expected.metrics()))
    pd.testing.assert_frame_equal(run.layers(), expected.layers())


def test_a_corrupt_checkpoint_names_the_repair_command_which_resumes_the_run(tmp_path, capsys):
    import pandas as pd
    import pytest

    from relief_nb import Run
    from relief_nb.experiments.checkpoints import CheckpointError

    expected = Run(small(), tmp_path / "whole", progress=False)
    expected.run()
    run = _interrupted(tmp_path / "corrupt")
    good = run.checkpoint_path.read_bytes()
    run.checkpoint_path.write_bytes(good[: len(good) // 3])
    with pytest.raises(CheckpointError, match=f"relief-nb repair {run.folder}"):
        Run(small(), tmp_path / "corrupt", progress=False).run()
    assert main(["repair", str(run.folder)]) == 0
    out = capsys.readouterr().out
    assert "rebuilt checkpoint.pt from iteration 1" in out and out.count("\n") == 1
    assert (run.folder / "checkpoint.corrupt.pt").read_bytes() == good[: len(good) // 3]  # kept, not deleted
    got = Run(small(), tmp_path / "corrupt", progress=False).run()
    pd.testing.assert_frame_equal(_comparable(got), _comparable(expected.metrics()))


def test_an_empty_results_file_is_named_and_rebuilt(tmp_path, capsys):
    import pandas as pd
    import pytest

    from relief_nb import Run
    from relief_nb.experiments.results import ResultsFileError

    run = Run(small(iterations=1), tmp_path, progress=False)
    expected = run.run()
    for name in ("metrics.csv", "layers.csv"):
        (run.folder / name).write_text("")
        with pytest.raises(ResultsFileError, match=f"{name} is empty or corrupt.*relief-nb repair {run.folder}"):
            Run.at(run.folder).layers()
        # reading the finished run back (a notebook, `relief-nb run` again) rewrites it from the checkpoint
        pd.testing.assert_frame_equal(Run(small(iterations=1), tmp_path, progress=False).run(), expected)
    (run.folder / "metrics.csv").write_text("")
    rc = main(["compare", f"a={run.folder.parent}"])
    err = capsys.readouterr().err
    assert rc == 1 and "relief-nb repair" in err and err.count("\n") == 1, err
    assert main(["repair", str(run.folder)]) == 0
    pd.testing.assert_frame_equal(Run.at(run.folder).metrics(), expected)


def test_migrate_says_when_there_is_nothing_to_do(tmp_path, capsys):
    assert main(["migrate", "--results-dir", str(tmp_path)]) == 0
    assert "nothing to migrate" in capsys.readouterr().out


def test_a_model_module_in_the_working_directory_imports_without_pythonpath(tmp_path, monkeypatch, capsys):
    import sys

    (tmp_path / "my_nets_for_cli.py").write_text(
        "from torch import nn\n\ndef make_net(num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, num_classes))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    rc = main(["run", "lenet300-mnist", "--profile", "smoke", "-p", "synthetic=True", "-p", "iterations=1",
               "--model", "my_nets_for_cli:make_net", "--results-dir", str(tmp_path / "results"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err


def test_every_option_of_every_command_has_its_help():
    import argparse

    from relief_nb.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(commands) >= {"list", "fetch", "run", "sweep", "compare", "notebook", "reproduce", "repair", "migrate"}
    missing = [f"{name} {a.option_strings or a.dest}" for name, sub in commands.items() for a in sub._actions
               if not a.help and not isinstance(a, argparse._HelpAction)]
    assert not missing, missing
