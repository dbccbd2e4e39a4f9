"""Thirty-odd bad inputs through the command line and the API, as a hostile (or hurried) user gives them.

For each, through the CLI: exit code 2, one line on stderr that names the problem, no traceback, and the results
folder byte-for-byte as it was. Through the API: one exception of the documented kind, a one-line message, and the
model's masks unchanged. Prints one line per case and ``N of N handled``.

    python benchmarks/hostile.py
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from relief_nb import ReliefConfig, as_dataset, export_pruned, relief_prune
from relief_nb.cli import main as cli
from relief_nb.graph.export import ExportError

SMOKE = ["--profile", "smoke", "-p", "synthetic=True", "--no-progress"]
OWN_DATA = ["--profile", "smoke", "--no-progress"]
BAD_MODELS = textwrap.dedent("""
    import torch
    from torch import nn

    def not_a_module(num_classes):
        return "a string"

    class Raises(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            raise RuntimeError("this forward always fails")

    def raises(num_classes):
        return Raises()

    class Subtracts(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(784, 8), nn.Linear(8, 10)

        def forward(self, x):
            h = self.a(x.flatten(1))
            return self.b(h - h.flip(1))

    def subtracts(num_classes):
        return Subtracts()
""")


def cli_cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(what, argv, a phrase the one line must contain)."""
    broken = tmp / "broken.pt"
    broken.write_bytes(b"not a torch file")
    return [
        ("an unknown preset", ["run", "no-such-preset", *SMOKE], "no-such-preset"),
        ("alpha above 1", ["run", "lenet300-mnist", *SMOKE, "-p", "alpha_conv=1.5"], "alpha_conv"),
        ("alpha of 0", ["run", "lenet300-mnist", *SMOKE, "-p", "alpha_fc=0"], "alpha_fc"),
        ("negative epochs", ["run", "lenet300-mnist", *SMOKE, "-p", "pretrain_epochs=-1"], "epochs"),
        ("a zero batch size", ["run", "lenet300-mnist", *SMOKE, "-p", "retrain_batch_size=0"], "batch_size"),
        ("an unknown optimizer", ["run", "lenet300-mnist", *SMOKE, "-p", "pretrain_optimizer=rmsprop"], "optimizer"),
        ("an unknown setting", ["run", "lenet300-mnist", *SMOKE, "-p", "alpah_fc=0.9"], "alpah_fc"),
        ("a value that is not a number", ["run", "lenet300-mnist", *SMOKE, "-p", "alpha_fc=high"], "alpha_fc"),
        ("an unknown device", ["run", "lenet300-mnist", *SMOKE, "--device", "tpu"], "tpu"),
        ("a validation split larger than the data", ["run", "lenet300-mnist", *SMOKE, "-p", "val_size=10000000"],
         "val_size"),
        ("a data set label that is a path", ["run", "lenet300-mnist", *SMOKE, "-p", "dataset=../../etc"], "dataset"),
        ("a model module that does not exist", ["run", "lenet300-mnist", *SMOKE, "--model", "nosuchmodule:make"],
         "nosuchmodule"),
        ("a model function that does not exist", ["run", "lenet300-mnist", *SMOKE, "--model", "hostile_models:nope"],
         "nope"),
        ("a factory that returns a string", ["run", "lenet300-mnist", *SMOKE, "--model",
                                             "hostile_models:not_a_module"], "not a torch.nn.Module"),
        ("a model whose forward raises", ["run", "lenet300-mnist", *SMOKE, "--model", "hostile_models:raises"],
         "this forward always fails"),
        ("a model NNrelief cannot prune", ["run", "lenet300-mnist", *SMOKE, "--model", "hostile_models:subtracts"],
         "cannot prune through it"),
        ("a data folder that does not exist", ["run", "lenet300-mnist", *OWN_DATA, "--data", str(tmp / "nowhere")],
         "nowhere"),
        ("a corrupt data file", ["run", "lenet300-mnist", *OWN_DATA, "--data", str(broken)], "broken.pt"),
        ("a sweep name that escapes the results folder", ["sweep", "--name", "../../outside", "--experiment",
                                                          "lenet300-mnist", "--profile", "smoke"], "name"),
        ("an unknown data set to fetch", ["fetch", "no-such-data"], "no-such-data"),
        ("a retraining of zero epochs", ["run", "lenet300-mnist", *SMOKE, "-p", "retrain_epochs=0"],
         "retrain_epochs"),
        ("a sweep grid with one invalid value", ["sweep", "--experiment", "lenet300-mnist", "--profile", "smoke",
                                                 "-p", "synthetic=True", "--alpha-fc", "0.9", "1.5", "--no-progress",
                                                 "--scheduler", "tcp://127.0.0.1:1"], "alpha_fc=1.5"),
        ("a sweep on an unknown device", ["sweep", "--experiment", "lenet300-mnist", "--profile", "smoke",
                                          "--device", "tpu", "--no-progress"], "tpu"),
        ("repair of a folder that is not a run", ["repair", str(tmp)], "not a run folder"),
    ]


def api_cases() -> list[tuple[str, Callable[[], object], type, str]]:
    """(what, call, the exception it must raise, a phrase of its one line)."""
    def mlp() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(8, 1, 4, 4)
    return [
        ("alpha outside (0, 1]", lambda: relief_prune(mlp(), x, ReliefConfig(alpha_conv=2.0)), ValueError, "alpha"),
        ("a batch with NaN", lambda: relief_prune(mlp(), x * float("nan")), ValueError, "NaN"),
        ("a batch of the wrong shape", lambda: relief_prune(mlp(), torch.rand(8, 3, 4, 4)), ValueError,
         "does not fit"),
        ("uint8 pixels", lambda: relief_prune(mlp(), (x * 255).to(torch.uint8)), TypeError, "uint8"),
        ("an empty batch", lambda: relief_prune(mlp(), x[:0]), ValueError, "empty"),
        ("exporting a model never pruned", lambda: export_pruned(mlp(), (1, 4, 4)), ExportError, "never pruned"),
        ("float labels", lambda: as_dataset((x, torch.rand(8), x, torch.rand(8))), TypeError, "class indices"),
        ("an ignore= name that is nothing", lambda: relief_prune(mlp(), x, ignore=["nope"]), KeyError, "nope"),
    ]


def _tree_hash(root: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def run_cli_case(argv: list[str], phrase: str, results: Path) -> str | None:
    """None if handled, else what went wrong."""
    before = _tree_hash(results)
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli([*argv, *(["--results-dir", str(results)] if argv[0] in ("run", "sweep") else [])])
        except SystemExit as stop:  # argparse's own usage errors
            code = stop.code
        except BaseException as exc:  # noqa: BLE001  (a hostile input must never escape as a traceback)
            return f"raised {type(exc).__name__}: {exc}"
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    if code != 2:
        return f"exit {code}: {err.getvalue().strip()[:200]}"
    if len(lines) != 1 or "Traceback" in err.getvalue():
        return f"{len(lines)} lines on stderr: {err.getvalue()[:200]}"
    if phrase not in lines[0]:
        return f"the line does not name {phrase!r}: {lines[0][:200]}"
    if _tree_hash(results) != before:
        return "the results folder changed"
    return None


def run_api_case(call: Callable[[], object], kind: type, phrase: str) -> str | None:
    try:
        call()
    except kind as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        if "\n" in str(message) or phrase not in str(message):
            return f"message: {message!r:.200}"
        return None
    except Exception as exc:  # noqa: BLE001
        return f"raised {type(exc).__name__} instead of {kind.__name__}: {exc}"
    return "nothing raised"


def main(argv: list[str] | None = None) -> list[dict]:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "hostile_models.py").write_text(BAD_MODELS)
        sys.path.insert(0, str(tmp))
        results = tmp / "results"
        results.mkdir()
        try:
            for what, args, phrase in cli_cases(tmp):
                problem = run_cli_case(args, phrase, results)
                rows.append({"case": f"CLI: {what}", "handled": problem is None, "problem": problem or ""})
                print(f"{'ok  ' if problem is None else 'FAIL'} CLI: {what}{'' if problem is None else ': ' + problem}")
        finally:
            sys.path.remove(str(tmp))
            sys.modules.pop("hostile_models", None)
    for what, call, kind, phrase in api_cases():
        problem = run_api_case(call, kind, phrase)
        rows.append({"case": f"API: {what}", "handled": problem is None, "problem": problem or ""})
        print(f"{'ok  ' if problem is None else 'FAIL'} API: {what}{'' if problem is None else ': ' + problem}")
    handled = sum(r["handled"] for r in rows)
    print(f"{handled} of {len(rows)} handled")
    return rows


if __name__ == "__main__":
    main()
