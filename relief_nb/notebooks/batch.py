"""Notebooks in batch: papermill execution for ``relief-nb notebook`` and ``relief-nb reproduce``.

Each notebook is executed from its template (``relief_nb/templates``, shipped with the package), with papermill's
progress bar over cells and the kernel's output streamed to the terminal (one line per finished iteration of
every run, and plain progress lines for epochs), so a long command is never silent.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..common import paths
from ..data.datasets import DATASETS, fetch_command
from ..experiments.presets import EXPERIMENTS, PROFILES
from ..experiments.config import parse_assignments
from .session import PROGRESS_ENV
from .specs import NOTEBOOKS, TABLES, check_parameters

__all__ = ["add_notebook_commands", "clean_notebook", "execute_notebook"]


def clean_notebook(path: Path) -> None:
    """Strip papermill's timestamps and durations, so an executed notebook diffs only where it changed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def execute_notebook(name: str, profile: str, extra: dict[str, Any], output: Path,
                     folders: dict[str, str] | None = None, progress: bool = True) -> Path:
    """Execute notebook ``name`` into ``output`` with papermill; ``folders`` (data_dir, results_dir) are
    injected as absolute paths unless omitted (a gallery notebook resolves them where it is opened).

    Never loses a result: papermill writes into a temporary file beside ``output``, which replaces ``output`` only
    when the whole notebook ran; a notebook that fails (or is interrupted) is kept as ``<name>.failed.ipynb``
    beside it, and the previous ``output`` stays as it was."""
    import papermill as pm

    spec = NOTEBOOKS[name]
    params = check_parameters(name, {"profile": profile, **extra, **(folders or {})})
    output.parent.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "text"  # the kernel inherits it: plain progress lines that stream to this terminal
    running = output.with_name(f".{output.stem}.running.ipynb")
    try:
        pm.execute_notebook(str(spec.path), str(running), parameters={**spec.injected(), **params},
                            kernel_name="python3", cwd=str(output.parent), progress_bar=progress,
                            log_output=progress, stdout_file=sys.stdout if progress else None,
                            stderr_file=sys.stderr if progress else None)
    except BaseException:
        if running.exists():
            os.replace(running, output.with_name(f"{output.stem}.failed.ipynb"))
        raise
    finally:
        if previous is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = previous
    clean_notebook(running)
    os.replace(running, output)  # atomic: the previous executed notebook is replaced only by a complete one
    return output


def _missing_data(name: str, profile: str, data_dir: Path) -> list[str]:
    if profile == "smoke":
        return []
    datasets = {EXPERIMENTS[e].data.name for e in NOTEBOOKS[name].experiments}
    return sorted(f"data set {d!r} not found in {data_dir}; fetch with: {fetch_command(d, data_dir)}"
                  for d in datasets if not (data_dir / DATASETS[d].folder).exists())


def run_many(names: list[str], profile: str | None, extra: dict[str, Any], results_dir: Path, data_dir: Path,
             gallery: Path | None = None, skip_missing: bool = False, progress: bool = True,
             given: frozenset[str] = frozenset()) -> int:
    """Execute notebooks one after the other; returns the exit code (0: all ran, 1: one failed or was missing).

    ``skip_missing``: a table whose data is absent is skipped with the fetch command (``reproduce`` without
    names); a notebook named explicitly whose data is absent fails. ``gallery``: write the executed notebooks
    there as ``<name>.ipynb`` in their gallery profile (when ``profile`` is None); the folders named in ``given``
    (``data_dir``, ``results_dir``: those the user passed) are injected, the others left to resolve where the
    notebook is opened.
    """
    from papermill.exceptions import PapermillExecutionError

    failed, ran = [], 0
    for name in names:
        if name not in NOTEBOOKS:
            print(f"error: unknown notebook {name!r}; notebooks: {', '.join(NOTEBOOKS)}", file=sys.stderr)
            failed.append(name)
            continue
        prof = profile or NOTEBOOKS[name].gallery_profile
        missing = _missing_data(name, prof, data_dir)
        if missing:
            print(f"{'skipped' if skip_missing else 'error: cannot run'} {name}: " + "; ".join(missing),
                  file=sys.stdout if skip_missing else sys.stderr)
            if not skip_missing:
                failed.append(name)
            continue
        spec = NOTEBOOKS[name]
        # the summary takes no run settings: --all -p alpha_fc=0.9 applies to the others (unknown names still fail)
        params = {k: v for k, v in extra.items() if k in spec.parameters or name != "summary"}
        if gallery and profile is None:
            params = {**dict(spec.gallery_params), **params}
        folders = {k: str(v.resolve()) for k, v in (("results_dir", results_dir), ("data_dir", data_dir))
                   if k in spec.parameters and (not gallery or k in given)}
        output = (gallery / f"{name}.ipynb" if gallery
                  else paths.notebook_folder(results_dir, prof, name) / f"{name}.ipynb")
        print(f"running notebook {name} ({prof} profile) -> {output}", flush=True)
        try:
            execute_notebook(name, prof, params, output, folders, progress)
        except ValueError as err:
            print(f"error in notebook {name}: {err}", file=sys.stderr)
            failed.append(name)
        except PapermillExecutionError as err:
            print(f"notebook {name} failed in cell {err.exec_count}: {err.ename}: {err.evalue}; kept as "
                  f"{output.with_name(f'{output.stem}.failed.ipynb')}, {output} unchanged", file=sys.stderr)
            failed.append(name)
        else:
            ran += 1
            print(f"finished notebook {name}: {output} (tables and figures beside it)", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    if not ran:
        print("error: no notebook ran (every data set is missing; see the fetch commands above)", file=sys.stderr)
        return 1
    return 0


def _extra(args: argparse.Namespace) -> dict[str, Any]:
    extra = parse_assignments(args.param)
    if args.device is not None:
        extra["device"] = args.device
    return extra


def _cmd_notebook(args: argparse.Namespace) -> int:
    names = list(NOTEBOOKS) if args.all else args.names
    if not names:
        print("error: name a notebook or pass --all; notebooks: " + ", ".join(NOTEBOOKS), file=sys.stderr)
        return 2
    profile = args.profile if args.profile or args.gallery else "cpu"
    given = frozenset(k for k in ("data_dir", "results_dir") if getattr(args, k) is not None)
    return run_many(names, profile, _extra(args), _folder(args.results_dir, paths.default_results_dir),
                    _folder(args.data_dir, paths.default_data_dir), progress=not args.no_progress,
                    gallery=Path(args.gallery) if args.gallery else None, given=given)


def _folder(value: str | None, default: Any) -> Path:
    return Path(value) if value is not None else default()


def _cmd_reproduce(args: argparse.Namespace) -> int:
    unknown = [t for t in args.tables if t not in TABLES]
    if unknown:
        print(f"error: unknown table(s) {unknown}; tables: {', '.join(TABLES)}", file=sys.stderr)
        return 2
    results, data = _folder(args.results_dir, paths.default_results_dir), _folder(args.data_dir,
                                                                                   paths.default_data_dir)
    code = run_many(args.tables or TABLES, args.profile, _extra(args), results, data, skip_missing=not args.tables,
                    progress=not args.no_progress)
    summary = run_many(["summary"], args.profile, {}, results, data, progress=not args.no_progress)
    return code or summary


def add_notebook_commands(sub: argparse._SubParsersAction) -> None:
    for command, helptext in (("notebook", "execute notebooks with papermill (profile and -p overrides)"),
                              ("reproduce", "execute the table notebooks (all, or those named) and the summary")):
        p = sub.add_parser(command, help=helptext)
        if command == "notebook":
            p.add_argument("names", nargs="*", help=f"notebooks: {', '.join(NOTEBOOKS)}")
            p.add_argument("--all", action="store_true", help="every notebook (the tour, the tables, the sweep and the "
                                                               "summary)")
            p.add_argument("--gallery", metavar="DIR",
                           help="rebuild the gallery: write DIR/<name>.ipynb (the committed notebooks/ folder), each "
                                "in its gallery profile unless --profile is given; --data-dir/--results-dir when "
                                "given, else the folders resolved where it is opened")
            p.set_defaults(func=_cmd_notebook, profile=None)
        else:
            p.add_argument("tables", nargs="*", help=f"tables: {', '.join(TABLES)} (none: every table whose data "
                                                     "is present)")
            p.set_defaults(func=_cmd_reproduce)
        p.add_argument("--profile", default=None if command == "notebook" else "cpu",
                       help=f"one of {', '.join(PROFILES)} (default: cpu"
                            f"{'; with --gallery, each notebook its own' if command == 'notebook' else ''})")
        p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                       help="a notebook parameter, e.g. -p alpha_fc=0.9 -p seed=1 (repeatable)")
        p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
        p.add_argument("--data-dir", default=None, help=f"where data sets live (default: {paths.default_data_dir()}"
                       f"{'; with --gallery, given: written into the notebooks' if command == 'notebook' else ''})")
        p.add_argument("--results-dir", default=None, help=f"where runs and tables go (default: "
                       f"{paths.default_results_dir()}"
                       f"{'; with --gallery, given: written into the notebooks' if command == 'notebook' else ''})")
        p.add_argument("--no-progress", action="store_true", help="no progress bar or streamed notebook output")
