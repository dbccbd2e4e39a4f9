"""Every code block of the README and of docs/ runs as written.

The fenced blocks are read from the Markdown files: ``python`` blocks of one page run in order in one interpreter
(a later block may use an earlier one's names), ``bash`` blocks run line by line with ``set -e``. They run in a
scratch folder laid out like the repository (its top-level entries linked, so ``data/``, ``.venv/``, ``sweeps/``
and the templates are where the pages say) whose own ``results/`` receives every output. Two substitutions, and
only these: ``make run`` runs with ``PROFILE=smoke`` (the same target, the fast profile: the real one takes 32
minutes), and ``make test`` is skipped (it is the command running these tests). Blocks in other languages (a
bibtex entry, an untagged diagram) are not code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```", re.S | re.M)
SKIPPED = {"make test"}  # the command that runs this test


def code_blocks(page: Path) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, indentation of list items removed."""
    out = []
    for m in FENCE.finditer(page.read_text()):
        indent = len(m.group(1))
        code = "\n".join(line[indent:] for line in m.group(3).splitlines())
        out.append((m.group(2), code))
    return out


def _cases() -> list:
    cases = []
    for page in PAGES:
        for language in ("python", "bash"):
            if any(lang == language for lang, _ in code_blocks(page)):
                cases.append(pytest.param(page, language, id=f"{page.relative_to(ROOT)}:{language}"))
    return cases


def _scratch(tmp_path: Path) -> Path:
    """A folder that looks like the repository to a command, with results of its own."""
    for entry in ROOT.iterdir():
        if entry.name not in ("results", ".git", ".pytest_cache"):
            (tmp_path / entry.name).symlink_to(entry)
    return tmp_path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELIEF_NB_") or k == "RELIEF_NB_CACHE"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # as with the venv activated
    env["PROFILE"] = "smoke"  # make run's profile
    env["MPLBACKEND"] = "Agg"
    return env


def test_every_page_with_code_is_checked():
    pages = {case.values[0] for case in _cases()}
    assert ROOT / "README.md" in pages and len(pages) >= 4
    readme = code_blocks(ROOT / "README.md")
    assert "make run" in readme[0][1] and "make test" in readme[0][1]  # the two commands come first


@pytest.mark.parametrize("page, language", _cases())
def test_code_blocks_run_as_written(page: Path, language: str, tmp_path: Path):
    blocks = [code for lang, code in code_blocks(page) if lang == language]
    # make run must find the environment installed: a stale one would reinstall from the scratch folder
    assert subprocess.run(["make", "-q", "-C", str(ROOT), "setup"], capture_output=True).returncode == 0, \
        "the .venv is older than pyproject.toml or constraints.txt: run make setup first"
    cwd = _scratch(tmp_path)
    if language == "python":
        script = "\n\n".join(blocks)
        cmd = [sys.executable, "-c", script]
    else:
        lines = []
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                command = line.split("#", 1)[0].strip()
                if command and command not in SKIPPED:
                    lines.append(command)
        cmd = ["bash", "-ec", "\n".join(lines)]
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{page.name} ({language}) failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if language == "bash":
        assert not (ROOT / "lenet.ipynb").exists()  # outputs went to the scratch folder


def test_the_readme_is_one_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
