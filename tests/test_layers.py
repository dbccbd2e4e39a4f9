"""The package's layers (docs/architecture.md): imports run only downward (import-linter's contract, as `make lint`
runs it), the public API is what `relief_nb` exports, and modules and classes stay small or say why not."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import relief_nb

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(project: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(LINT), "--no-cache"], cwd=project, capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """The package and its pyproject.toml in a folder of their own, to break on purpose."""
    project = tmp_path_factory.mktemp("layers")
    shutil.copytree(ROOT / "relief_nb", project / "relief_nb", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    return project


def test_the_layers_contract_is_kept(copy):
    result = lint(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "upward"), [("core/masks.py", "from ..sweeps.sweep import run_sweep"),
                                                ("graph/trace.py", "from ..pruning.relief import relief_prune"),
                                                ("experiments/config.py", "from ..notebooks import session")])
def test_an_upward_import_breaks_the_contract(copy, module, upward):
    path = copy / "relief_nb" / module
    original = path.read_text()
    try:
        path.write_text(original + f"\n{upward}  # noqa\n")
        result = lint(copy)
    finally:
        path.write_text(original)
    assert result.returncode != 0
    lower, upper = module.split("/")[0], upward.split()[1].split(".")[2]
    assert f"relief_nb.{lower} is not allowed to import relief_nb.{upper}" in result.stdout


def _documented_code() -> list[tuple[str, str]]:
    """(where, code) of every code block of the README and docs and every code cell of the notebooks."""
    out = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in re.findall(r"```(?:python|py)?\n(.*?)```", md.read_text(), flags=re.S):
            out.append((md.name, block))
        out.append((md.name, " ".join(re.findall(r"`([^`\n]+)`", md.read_text()))))
    for nb in [*sorted((ROOT / "relief_nb" / "notebooks" / "templates").glob("*.ipynb")),
               *sorted((ROOT / "notebooks").glob("*.ipynb"))]:
        cells = json.loads(nb.read_text())["cells"]
        out += [(nb.name, "".join(c["source"])) for c in cells if c["cell_type"] == "code"]
    return out


def test_docs_and_notebooks_use_only_what_relief_nb_exports():
    for where, code in _documented_code():
        imports = re.findall(r"from relief_nb import \(([^)]*)\)", code) + re.findall(
            r"from relief_nb import ([\w, ]+)$", code, flags=re.M)
        for names in imports:
            for name in [n.strip() for n in names.split(",") if n.strip()]:
                assert hasattr(relief_nb, name), f"{where}: relief_nb has no {name}"
        for module in re.findall(r"(?:from|import) (relief_nb\.[\w.]+)", code):
            assert module == "relief_nb.notebooks", f"{where} imports {module}; use what relief_nb exports"
        for name in re.findall(r"\brelief_nb\.(\w+)\b(?!/|\.py)", code):
            assert hasattr(relief_nb, name) or name == "notebooks", f"{where}: relief_nb.{name} is not exported"


def test_every_exported_name_resolves():
    for name in relief_nb.__all__:
        assert getattr(relief_nb, name) is not None, name


def test_modules_and_classes_stay_small_or_say_why():
    why = (ROOT / "docs" / "architecture.md").read_text().split("## Sizes", 1)[1]
    for path in sorted((ROOT / "relief_nb").rglob("*.py")):
        rel = path.relative_to(ROOT / "relief_nb").as_posix()
        text = path.read_text()
        if len(text.splitlines()) > 420:
            assert f"`{rel}`" in why, f"{rel} has {len(text.splitlines())} lines; split it or say why in docs"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno > 260:
                assert f"`{rel}`" in why, f"class {node.name} in {rel} is {node.end_lineno - node.lineno} lines"
