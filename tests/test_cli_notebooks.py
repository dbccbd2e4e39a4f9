"""The command line and the notebooks: listing, validation, papermill execution with figures, skipping."""

import json
from pathlib import Path

import nbformat
import pytest

from relief_nb.cli import main, parse_assignments
from relief_nb.common.paths import TEMPLATE_DIR
from relief_nb.notebooks.session import NOTEBOOKS, check_parameters

ROOT = Path(__file__).resolve().parent.parent


def test_parse_assignments_reads_literals():
    assert parse_assignments(["alpha_fc=0.9", "iterations=None", "device=cpu", "baselines=False"]) == {
        "alpha_fc": 0.9, "iterations": None, "device": "cpu", "baselines": False}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_assignments(["alpha_fc"])


def test_list_shows_experiments_and_notebooks(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "lenet300-mnist" in out and "tour" in out and "profiles: paper, cpu, smoke" in out
    assert "conv scoring kernel: " in out


def test_list_says_when_the_kernel_is_off(capsys, monkeypatch):
    monkeypatch.setenv("RELIEF_NB_NATIVE", "0")
    assert main(["list"]) == 0
    assert "conv scoring kernel: pure torch" in capsys.readouterr().out


def test_run_command_on_synthetic_smoke(tmp_path, capsys):
    code = main(["run", "lenet300-mnist", "--profile", "smoke", "-p", "synthetic=True", "--results-dir",
                 str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "compression" in out and "not results" in out


def test_run_command_reports_bad_input(tmp_path, capsys):
    assert main(["run", "lenet300-mnist", "-p", "alpha_fc=2", "--results-dir", str(tmp_path)]) == 2
    assert "(0, 1]" in capsys.readouterr().err
    assert main(["run", "no-such-experiment"]) == 2
    assert "known experiments" in capsys.readouterr().err


@pytest.mark.parametrize("params, message", [
    ({"profile": "smoke", "alpah_fc": 0.9}, "unknown parameter"),
    ({"profile": "smoke", "seed": "zero"}, "wrong type"),
    ({"profile": "huge"}, "valid profiles: paper, cpu, smoke"),
])
def test_check_parameters_lists_the_valid_ones(params, message):
    with pytest.raises(ValueError, match=message) as err:
        check_parameters("lenet-mnist", params)
    assert "lenet-mnist" in str(err.value)


def test_every_template_has_one_parameters_cell_matching_its_spec():
    for name, spec in NOTEBOOKS.items():
        nb = nbformat.read(spec.path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, name
        names = {line.split("=")[0].strip() for line in tagged[0].source.splitlines()
                 if "=" in line and not line.startswith("#")}
        assert names - {"table"} <= set(spec.parameters), name
        assert "profile" in names


def test_table_notebooks_share_one_template_and_the_gallery_has_one_entry_each():
    tables = [spec for spec in NOTEBOOKS.values() if spec.is_table]
    assert len(tables) == 4 and {spec.path for spec in tables} == {TEMPLATE_DIR / "table.ipynb"}
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        checked = [c for c in nb.cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source]
        # the only checked cells are the CPU-independent fingerprints (relief_nb/fingerprint.py)
        assert all("session.fingerprint()" in c.source for c in checked), name
        assert bool(checked) == bool(NOTEBOOKS[name].experiments), name


def test_notebook_command_refuses_unknown_parameter_and_names_the_notebook(tmp_path, capsys):
    code = main(["notebook", "lenet-mnist", "--profile", "smoke", "-p", "alpah=1", "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "lenet-mnist" in err and "valid parameters" in err


def test_bad_profile_stops_the_notebook_in_its_first_cells(tmp_path):
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as err:
        pm.execute_notebook(str(TEMPLATE_DIR / "summary.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"profile": "huge"}, kernel_name="python3", progress_bar=False)
    assert "valid profiles" in str(err.value)
    assert err.value.exec_count <= 4


def test_a_named_notebook_without_its_data_fails_with_the_fetch_command(tmp_path, capsys):
    code = main(["notebook", "tour", "--data-dir", str(tmp_path / "nodata"), "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "cannot run tour" in err and f"relief-nb fetch mnist --data-dir {tmp_path / 'nodata'}" in err
    assert not (tmp_path / "tour").exists()


def test_reproduce_skips_tables_without_data_and_fails_when_none_ran(tmp_path, capsys):
    code = main(["reproduce", "--profile", "cpu", "--device", "cpu", "--data-dir", str(tmp_path / "nodata"),
                 "--results-dir", str(tmp_path / "results"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1 and "no notebook ran" in captured.err
    assert "skipped cifar100" in captured.out
    assert f"relief-nb fetch cifar100 --data-dir {tmp_path / 'nodata'}" in captured.out
    assert (tmp_path / "results" / "summary" / "summary.ipynb").exists()  # the summary still runs


@pytest.mark.slow
def test_tour_executes_headless_with_figures_and_results(tmp_path, capfd):
    code = main(["notebook", "tour", "--profile", "smoke", "--results-dir", str(tmp_path), "--data-dir",
                 str(ROOT / "data"), "-p", "progress=True"])
    assert code == 0
    out = capfd.readouterr()
    assert "Executing" in out.err  # papermill's bar over cells
    assert "[lenet300-mnist] iteration 2/2" in out.out  # a line per finished iteration, streamed from the kernel
    out = tmp_path / "smoke" / "tour" / "tour.ipynb"
    nb = nbformat.read(out, as_version=4)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 5
    per_cell = [sum("image/png" in o.get("data", {}) for o in c.get("outputs", [])) for c in nb.cells]
    assert max(per_cell) == 1  # each figure is shown once
    assert "papermill" not in nb.metadata  # timestamps stripped
    figures = sorted(p.name for p in (tmp_path / "smoke" / "tour" / "figures").glob("*.png"))
    assert "tour_alpha_rule.png" in figures and "tour_pixels_final.png" in figures
    runs = {p.parent.parent.name.split("_")[0]: p for p in (tmp_path / "smoke" / "runs").glob("*/seed_0/metrics.json")}
    assert sorted(runs) == ["lenet300-100", "two-branch"]  # the preset's run and the user-defined network's
    assert len(json.loads(runs["lenet300-100"].read_text())) == 3
    assert "tour_own_network.png" in figures
