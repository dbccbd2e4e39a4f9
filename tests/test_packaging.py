"""Project files agree with each other: environment.yml vs pyproject.toml, console script, notebooks."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for name, extra in project["optional-dependencies"].items():
        if name != "gpu":  # dask-cuda: for GPU machines only (pip install 'relief_nb[gpu]'), not the CPU environment
            wanted |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) - {"-e ."} == wanted


def test_console_script_points_at_cli_main():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["relief-nb"] == "relief_nb.cli:main"
    from relief_nb.cli import main

    assert callable(main)


def test_torch_is_pinned_for_the_cpu_wheel():
    assert "torch==" in (ROOT / "constraints.txt").read_text()
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


def test_kernel_source_ships_with_the_package():
    """A non-editable install must carry csrc/patch_gram.c, which relief_nb.core.native compiles on first use."""
    from relief_nb.core import native as native

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert native.SOURCE.exists()
    assert any(native.SOURCE.match(pattern) for pattern in config["relief_nb.core"])


@pytest.mark.slow
def test_an_installed_wheel_finds_its_notebooks(tmp_path):
    """Build a wheel, install it in a fresh virtual environment (torch and the rest borrowed from this one's
    site-packages through a .pth line, the editable relief_nb not), and execute a notebook from elsewhere."""
    wheels, source = tmp_path / "wheels", tmp_path / "source"
    source.mkdir()
    # built from a copy: setuptools reuses a build/ folder in the tree, which may hold files an older layout left
    for name in ("pyproject.toml", "README.md", "relief_nb"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / name).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(source)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next(wheels.glob("relief_nb-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert {"relief_nb/notebooks/templates/table.ipynb", "relief_nb/notebooks/templates/tour.ipynb",
            "relief_nb/notebooks/templates/summary.ipynb", "relief_nb/core/csrc/patch_gram.c"} <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    with zipfile.ZipFile(wheel) as zf:  # what pip install does for a pure-Python wheel, without needing pip
        zf.extractall(site)
    borrowed = sysconfig.get_paths()["purelib"]
    (site / "borrowed.pth").write_text(borrowed + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    check = subprocess.run([str(python), "-c", "import relief_nb, sys; print(relief_nb.__file__)"], cwd=work,
                           capture_output=True, text=True, check=True)
    assert check.stdout.startswith(str(site))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELIEF_NB")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    proc = subprocess.run([str(python), "-m", "relief_nb.cli", "notebook", "summary", "--profile", "smoke",
                           "--no-progress"], cwd=work, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (work / "results" / "smoke" / "summary" / "summary.ipynb").exists()
