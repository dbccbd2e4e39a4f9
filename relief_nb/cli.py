"""relief-nb: NNrelief from the command line. list: what exists; fetch: download a data set; run: one
experiment; sweep: a grid on Dask; compare: experiment folders side by side; notebook / reproduce: executed
notebooks; repair: a damaged run folder; migrate: older run folders. ``relief-nb COMMAND --help`` for each."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from .common import paths
from .experiments.config import parse_assignments
from .notebooks.batch import add_notebook_commands
from .notebooks.specs import NOTEBOOKS
from .sweeps.compare import add_compare_command
from .sweeps.sweep import add_sweep_command

__all__ = ["main", "parse_assignments"]


def _cmd_list(args: argparse.Namespace) -> int:
    from .data.datasets import DATASETS
    from .experiments.presets import EXPERIMENTS, PROFILES
    from .models.zoo import MODELS

    print("experiments (relief-nb run NAME --profile P):")
    for name, cfg in EXPERIMENTS.items():
        relief = cfg.method.relief
        print(f"  {name:20s} {cfg.model} on {cfg.data.name}, alpha_conv={relief.alpha_conv}, "
              f"alpha_fc={relief.alpha_fc}")
    print(f"profiles: {', '.join(PROFILES)}")
    print(f"models: {', '.join(sorted(MODELS))}")
    print(f"data sets: {', '.join(sorted(DATASETS))}")
    from .core import native

    kernel = f"compiled (cached in {native.cache_dir()})" if native.available() else \
        "pure torch (no C compiler, or RELIEF_NB_NATIVE=0)"
    print(f"conv scoring kernel: {kernel}")
    print(f"notebooks (relief-nb notebook NAME; templates in {paths.TEMPLATE_DIR}):")
    for nb in NOTEBOOKS.values():
        print(f"  {nb.name:22s} {nb.title}; parameters: {', '.join(nb.parameters)}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .data.datasets import fetch

    print(f"fetched {args.dataset} into {fetch(args.dataset, args.data_dir)}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .experiments.presets import experiment_config
    from .experiments.run import Run

    params = parse_assignments(args.param)
    if args.model:
        params["model"] = args.model  # a factory "package.module:function" or a registered name
        if "" not in sys.path and str(Path.cwd()) not in sys.path:  # as `python -m` does: modules beside you import
            sys.path.insert(0, str(Path.cwd()))
    data = None
    if args.data:
        data = args.data  # a folder of your own (IDX files or train/<class>/, test/<class>/ images) or a file
        if not Path(data).exists():  # a usage error: the path was typed, not the data lost
            raise ValueError(f"--data {data} does not exist: pass a folder (IDX files or train/<class>/ and "
                             "test/<class>/ images) or a .pt / .npz file")
        params.setdefault("dataset", _data_label(args.data))
    cfg = experiment_config(args.experiment, args.profile, **params)
    run = Run(cfg, paths.runs_folder(args.results_dir, args.profile), args.data_dir, args.device,
              progress=not args.no_progress, label=args.experiment, data=data,
              meta={"preset": args.experiment, "profile": args.profile})
    print(f"run folder: {run.folder}")
    metrics = run.run(resume=not args.restart)
    cols = ["iteration", "val_acc", "test_acc", "test_error", "params_remaining", "compression", "flops_reduction"]
    print(metrics[cols].to_string(index=False))
    if cfg.data.synthetic:
        print("NOTE: synthetic stand-in data: these numbers are not results.")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from .experiments.migration import migrate_runs

    total = 0
    for profile in ("cpu", "smoke"):
        runs = paths.runs_folder(args.results_dir, profile)
        moved = migrate_runs(runs, args.data_dir) if runs.is_dir() else []
        for old, new in moved:
            print(f"{runs}: {old} -> {new}")
        total += len(moved)
    print(f"migrated {total} run folder(s) in {args.results_dir}" if total else
          f"nothing to migrate: every run folder in {args.results_dir} has the current layout")
    return 0


def _cmd_repair(args: argparse.Namespace) -> int:
    from .experiments.run import Run

    folder = Path(args.folder)
    if not (folder / "config.json").exists():
        raise ValueError(f"{folder} is not a run folder (no config.json); give the run folder that the error "
                         "message named")
    print(Run.at(folder, data_dir=args.data_dir).repair())
    return 0


def _data_label(folder: str) -> str:
    path = Path(folder).resolve()
    return (path.stem if path.is_file() else path.name) or "custom"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relief-nb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="experiments, profiles, models, data sets and notebooks")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("fetch", help="download a data set (checksums verified)")
    p.add_argument("dataset", help="mnist, cifar10, cifar100 or tiny-imagenet (relief-nb list)")
    p.add_argument("--data-dir", default=str(paths.default_data_dir()),
                   help="where data sets live (default: %(default)s)")
    p.set_defaults(func=_cmd_fetch)
    p = sub.add_parser("run", help="run (or resume) one experiment without a notebook",
                       description="Run or resume one experiment: a preset (relief-nb list) sized by --profile, "
                                   "with -p overrides; --model and --data swap in a network and data of your own "
                                   "(the preset then gives the method's and the schedule's settings).")
    p.add_argument("experiment", help="a preset, e.g. lenet300-mnist")
    p.add_argument("--model", help="a model factory 'package.module:function' (a module in the working directory "
                                   "or on PYTHONPATH; called with num_classes, input_shape or in_channels if it "
                                   "declares them) or a registered model")
    p.add_argument("--data", help="data of your own: a folder (MNIST's IDX files, or train/<class>/*.png and "
                                  "test/<class>/*.png) or a .pt / .npz file with train_x, train_y, test_x, test_y "
                                  "(images, sequences, volumes or integer token ids; a .pt dict may add "
                                  "inputs='as_is'); the run is labelled by its name (-p dataset=...)")
    p.add_argument("--profile", default="cpu", help="smoke (minutes), cpu (default) or paper (the paper's schedule)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="any setting by its flat name, e.g. -p alpha_fc=0.9 -p retrain_epochs=5 (repeatable)")
    p.add_argument("--data-dir", default=str(paths.default_data_dir()),
                   help="where data sets live (default: %(default)s)")
    p.add_argument("--results-dir", default=str(paths.default_results_dir()),
                   help="the run goes to RESULTS_DIR/runs/<run name> (RESULTS_DIR/smoke/runs for --profile smoke)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (a line per finished iteration stays)")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("migrate", help="move run folders of an older layout to <experiment>/seed_<k>/ (no training)")
    p.add_argument("--data-dir", default=str(paths.default_data_dir()),
                   help="where data sets live (default: %(default)s)")
    p.add_argument("--results-dir", default=str(paths.default_results_dir()),
                   help="the results folder whose runs/ and smoke/runs/ are migrated (default: %(default)s)")
    p.set_defaults(func=_cmd_migrate)
    p = sub.add_parser("repair", help="rebuild a damaged run folder from its last finished iteration (no training)",
                       description="Rebuild what a damaged run folder lost, keeping everything intact: a corrupt "
                                   "checkpoint.pt is moved to checkpoint.corrupt.pt and rebuilt from the last "
                                   "finished iteration (iterations/XX/); metrics.csv, metrics.json and layers.csv are "
                                   "rewritten. Then rerun the run's command to go on.")
    p.add_argument("folder", help="the run folder an error message named")
    p.add_argument("--data-dir", default=str(paths.default_data_dir()),
                   help="where the run's data set lives, to rebuild its model (default: %(default)s)")
    p.set_defaults(func=_cmd_repair)
    add_notebook_commands(sub)
    add_sweep_command(sub)
    add_compare_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 a usage error (bad name or value), 1 a failure (data, files, checkpoint), 130 Ctrl-C."""
    from .experiments.checkpoints import CheckpointError
    from .experiments.results import ResultsFileError
    from .experiments.training import TrainingDiverged
    from .graph.nodes import UnsupportedModuleError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (KeyError, ValueError, UnsupportedModuleError) as err:  # a bad name or value, a model it cannot prune
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except CheckpointError as err:
        print(f"error: {err}; or rerun with --restart to start the run over", file=sys.stderr)
        return 1
    except ResultsFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # missing data, an unwritable results folder, a failed download, a full disk
        if err.errno == errno.ENOSPC:  # every file is written atomically: nothing half-written to repair
            print(f"error: the disk is full ({err.filename or 'writing results'}): free some space and rerun the same "
                  "command, which resumes where it stopped", file=sys.stderr)
            return 2
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last finished epoch", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
