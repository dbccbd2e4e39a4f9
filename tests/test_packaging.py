"""Project files agree with each other: environment.yml vs pyproject.toml, console script, notebooks."""

from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
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
    """A non-editable install must carry csrc/patch_gram.c, which relief_nb.native compiles on first use."""
    from relief_nb import native

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert native.SOURCE.exists()
    assert any(native.SOURCE.match(pattern) for pattern in config["relief_nb"])
