"""Names stay inside the results folder: every user-given name that becomes part of a path (sweep names, table and
figure names, data set labels, a baseline's reference, notebook folders) is one plain path component, refused in
one line with exit 2 (a ValueError in the API) before anything is written; writers check the resolved target too."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from relief_nb.cli import main
from relief_nb.common import paths as paths
from relief_nb.experiments.config import ExperimentConfig
from relief_nb.experiments.run import Run
from relief_nb.sweeps.sweep import run_sweep

ROOT = Path(__file__).resolve().parent.parent
ESCAPES = ["..", ".", "../outside", "../../../outside", "a/b", "a\\b", "/tmp/outside", "C:\\outside", "C:outside",
           "", "   ", "bad\x00name", "new\nline", "x" * 300]
ORDINARY = ["lenet300-paper", "run_1.2+3", "Übung mit Leerzeichen", "α sweep", "实验 1"]


def tree_hash(folder: Path) -> str:
    """Every file and folder under ``folder`` with its content: changes when anything appears or changes."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode("utf-8", "surrogateescape"))
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def sandbox(tmp_path):
    """``tmp_path/a/b/results`` with a bystander file beside it and above it, which must never change."""
    results = tmp_path / "a" / "b" / "results"
    results.mkdir(parents=True)
    (tmp_path / "report.md").write_text("a user's file\n")
    (tmp_path / "a" / "outside").mkdir()
    (tmp_path / "a" / "outside" / "report.md").write_text("another user's file\n")
    return tmp_path, results


@pytest.mark.parametrize("name", ORDINARY)
def test_ordinary_names_pass_unchanged(name):
    assert paths.safe_name(name, "--name") == name


@pytest.mark.parametrize("name", ESCAPES)
def test_names_that_are_paths_or_unreadable_are_refused(name):
    with pytest.raises(ValueError, match="--name") as err:
        paths.safe_name(name, "--name")
    assert "\n" not in str(err.value).replace(repr(name), "")  # one line (the name itself shown escaped)


def test_a_name_that_is_not_a_string_is_refused():
    with pytest.raises(ValueError, match="--name must be a string"):
        paths.safe_name(3, "--name")


def test_length_counts_the_suffix_in_bytes():
    assert paths.safe_name("é" * 125, "x", ".png")  # 250 + 4 bytes
    with pytest.raises(ValueError, match="longer than the file system allows"):
        paths.safe_name("é" * 126, "x", ".png")


def test_inside_follows_symbolic_links(tmp_path):
    root = tmp_path / "results"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    assert paths.inside(root, root / "sweeps" / "x") == root / "sweeps" / "x"
    for target in (root / ".." / "x", root / "link" / "x", tmp_path):
        with pytest.raises(ValueError, match="outside"):
            paths.inside(root, target)


@pytest.mark.parametrize("name", ["..", "../outside", "../../../outside", "a/b", "a\\b", "/tmp/outside", ""])
def test_cli_sweep_name_is_refused_with_exit_2_and_nothing_written(name, sandbox, capsys):
    top, results = sandbox
    before = tree_hash(top)
    rc = main(["sweep", "--experiment", "lenet300-mnist", "--profile", "smoke", "--name", name, "--collect",
               "--results-dir", str(results), "--data-dir", str(ROOT / "data"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: sweep name (--name") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert tree_hash(top) == before


def test_grid_file_name_is_refused_with_exit_2(sandbox, capsys):
    top, results = sandbox
    grid = top / "a" / "grid.toml"
    grid.write_text('experiment = "lenet300-mnist"\nprofile = "smoke"\nname = "../../../outside"\n')
    before = tree_hash(top)
    rc = main(["sweep", str(grid), "--collect", "--results-dir", str(results), "--data-dir", str(ROOT / "data")])
    err = capsys.readouterr().err
    assert rc == 2 and "name = in a grid file" in err and err.count("\n") == 1
    assert tree_hash(top) == before


@pytest.mark.parametrize("name", ["../outside", "/tmp/outside", "a/b"])
def test_api_sweep_name_is_a_value_error_before_anything_is_written(name, sandbox):
    top, results = sandbox
    before = tree_hash(top)
    with pytest.raises(ValueError, match="sweep name"):
        run_sweep("lenet300-mnist", profile="smoke", params={"synthetic": True}, results_dir=results,
                  data_dir=ROOT / "data", name=name, save=True, execute=False)
    assert tree_hash(top) == before


@pytest.mark.parametrize(("param", "value"), [("reference", "../../outside"), ("reference", "/tmp/outside"),
                                              ("reference", "exp/../../x"), ("dataset", "../outside"),
                                              ("dataset", "a/b")])
def test_cli_run_parameters_that_become_paths_are_refused(param, value, sandbox, capsys):
    top, results = sandbox
    before = tree_hash(top)
    extra = ["-p", "method=random"] if param == "reference" else []
    rc = main(["run", "lenet300-mnist", "--profile", "smoke", "-p", "synthetic=False", "-p", f"{param}={value}",
               *extra, "--results-dir", str(results), "--data-dir", str(ROOT / "data"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {param}") and err.count("\n") == 1, err
    assert tree_hash(top) == before


@pytest.mark.parametrize("param", ["reference", "dataset"])
def test_api_config_refuses_paths_as_names(param):
    extra = {"method": "random"} if param == "reference" else {}
    with pytest.raises(ValueError, match=param):
        ExperimentConfig.of(**{param: "../outside"}, **extra)


def test_reference_accepts_an_experiment_or_one_of_its_seeds():
    for ref in ("lenet300-100_mnist_ac0.9_af0.95_642e0c41", "lenet300-100_mnist_ac0.9_af0.95_642e0c41/seed_2"):
        assert ExperimentConfig.of(method="random", reference=ref).method.reference == ref
    with pytest.raises(ValueError, match="seed_<k>"):
        ExperimentConfig.of(method="random", reference="exp/other")


@pytest.mark.parametrize("name", ["../outside", "/tmp/outside", "a/b", ".."])
def test_notebook_tables_and_figures_refuse_paths(name, sandbox):
    import matplotlib.pyplot as plt
    import pandas as pd

    from relief_nb.notebooks.session import Session, check_parameters

    top, results = sandbox
    session = Session("lenet-mnist", check_parameters("lenet-mnist", {"profile": "smoke",
                                                                      "results_dir": str(results)}))
    before = tree_hash(top)
    with pytest.raises(ValueError, match="table name"):
        session.save_table(pd.DataFrame({"a": [1]}), name)
    fig = plt.figure()
    with pytest.raises(ValueError, match="figure name"):
        session.figure(fig, name)
    plt.close(fig)
    assert tree_hash(top) == before
    with pytest.raises(ValueError, match="notebook name"):
        paths.notebook_folder(results, "cpu", name)


def test_run_folder_cannot_leave_the_results_folder_even_if_a_name_escapes(sandbox, monkeypatch):
    """Defence in depth: a run name that escaped the name rule (here forced) is still refused by the writer."""
    top, results = sandbox
    cfg = ExperimentConfig.of(model="lenet300-100", synthetic=True, n_train=200, n_test=50, val_size=50)
    monkeypatch.setattr(ExperimentConfig, "run_name", lambda self, *a, **k: "../../outside/seed_0")
    before = tree_hash(top)
    with pytest.raises(ValueError, match="outside"):
        Run(cfg, results, progress=False).folder  # noqa: B018
    assert tree_hash(top) == before


def test_fetch_refuses_a_data_folder_that_escapes(tmp_path, monkeypatch):
    from dataclasses import replace

    from relief_nb.data import datasets as data

    monkeypatch.setitem(data.DATASETS, "mnist", replace(data.DATASETS["mnist"], folder="../elsewhere"))
    with pytest.raises(ValueError, match="outside"):
        data.fetch("mnist", tmp_path / "data")
    assert not (tmp_path / "elsewhere").exists()


def test_a_unicode_name_with_spaces_works_end_to_end(tmp_path, capsys):
    """A real (smoke, synthetic) sweep, then its tables, report and figure written under a unicode name."""
    name = "Übung α 1"
    results = tmp_path / "results"
    rc = main(["sweep", "--experiment", "lenet300-mnist", "--profile", "smoke", "--seeds", "0", "-p",
               "synthetic=True", "-p", "iterations=1", "--name", name, "--results-dir", str(results),
               "--data-dir", str(ROOT / "data"), "--no-progress", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    folder = results / "smoke" / "sweeps" / name
    assert {"sweep.csv", "aggregate.csv", "report.md", "lenet300-mnist.png"} <= {p.name for p in folder.iterdir()}
    assert "NNrelief" in (folder / "report.md").read_text()
    assert sorted(p.name for p in (results / "smoke").iterdir()) == ["runs", "sweeps"]
