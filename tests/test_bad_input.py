"""Bad input to `relief-nb run`: a one-line error naming the setting, exit code 2 (usage) or 1 (failure), and
nothing written: no run folder, no file."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from relief_nb.cli import main
from relief_nb.data.datasets import DATASETS
from relief_nb.pruning.relief import ReliefConfig

SMOKE = ["run", "lenet300-mnist", "--profile", "smoke", "--no-progress"]


def files_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("params, message", [
    (["seed=abc"], "seed must be an integer"),
    (["n_train=0"], "n_train must be None or an integer >= 1"),
    (["val_size=100000"], "val_size=100000 leaves no training data"),
    (["scoring_size=0"], "scoring_size must be an integer >= 1"),
    (["pretrain_lr=abc"], "lr must be a number > 0"),
    (["tolerance=abc"], "tolerance must be None or a fraction"),
    (["alpha_fc=True"], "alpha_fc must be a number in (0, 1]"),
    (["alpha_fc='0.9'"], "alpha_fc must be a number in (0, 1]"),
    (["iterations=-1"], "iterations must be an integer >= 0"),
    (["retrain_batch_size=0"], "batch_size must be an integer >= 1"),
])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, capsys, params, message):
    args = [*SMOKE, "--results-dir", str(tmp_path / "results")]
    for p in params:
        args += ["-p", p]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert files_under(tmp_path / "results") == []


def test_missing_data_fails_with_the_fetch_command_and_writes_nothing(tmp_path, capsys):
    code = main([*SMOKE, "--data-dir", str(tmp_path / "nodata"), "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 1 and f"relief-nb fetch mnist --data-dir {tmp_path / 'nodata'}" in err
    assert files_under(tmp_path / "results") == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_only_machine_is_refused(tmp_path, capsys):
    assert main([*SMOKE, "--device", "cuda", "-p", "synthetic=True", "--results-dir", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err and files_under(tmp_path) == []


def test_labels_out_of_range_are_refused(tmp_path, capsys, monkeypatch):
    spec = DATASETS["mnist"]
    import relief_nb.experiments.inputs as experiment  # where a run builds its data

    def corrupt(name, seed=0, **kw):
        ds = experiment.synthetic_dataset.__wrapped__(name, seed=seed) if hasattr(
            experiment.synthetic_dataset, "__wrapped__") else original(name, seed=seed)
        ds.test_y[0] = 255
        return ds

    original = experiment.synthetic_dataset
    monkeypatch.setattr(experiment, "synthetic_dataset", corrupt)
    assert spec.num_classes == 10
    assert main([*SMOKE, "-p", "synthetic=True", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "test labels must lie in [0, 10) (num_classes=10), found 0..255" in err and files_under(tmp_path) == []


def test_results_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([*SMOKE, "-p", "synthetic=True", "--results-dir", str(blocker)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_corrupt_checkpoint_is_one_line_that_names_restart(tmp_path, capsys):
    args = [*SMOKE, "-p", "synthetic=True", "-p", "iterations=1", "--results-dir", str(tmp_path)]
    assert main(args) == 0
    checkpoint = next(tmp_path.rglob("checkpoint.pt"))
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and "--restart" in err and err.count("\n") == 1
    assert main([*args, "--restart"]) == 0


def test_ctrl_c_says_how_to_resume(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "relief_nb.cli", *SMOKE, "-p", "synthetic=True", "-p",
                             "pretrain_epochs=200", "--results-dir", str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # pytest-xdist workers ignore SIGINT, and a child would inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # wait for the first checkpoint, then interrupt: earlier, the CLI is still importing, outside its handler
        # (a loaded CI machine once took over a minute to get there)
        deadline = time.monotonic() + 600
        while not list(tmp_path.rglob("checkpoint.pt")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(tmp_path.rglob("checkpoint.pt")), f"no checkpoint written (exit code {proc.poll()})"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("interrupted: rerun the same command to resume")
    assert "Traceback" not in err


def test_relief_config_refuses_strings_and_bools():
    for bad in ("0.9", True):
        with pytest.raises(ValueError, match=r"alpha_fc must be a number in \(0, 1\]"):
            ReliefConfig(alpha_fc=bad)
