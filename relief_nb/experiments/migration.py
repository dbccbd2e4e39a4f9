"""Run folders of older layouts (relief_nb 0.1's names, 0.2 development's flat names) moved to today's
``<experiment>/seed_<k>/``: ``relief-nb migrate``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..common.files import atomic_write
from .config import ExperimentConfig, override
from .run import Run

__all__ = ["migrate_runs"]


def migrate_runs(runs_dir: str | os.PathLike, data_dir: str | os.PathLike = "data") -> list[tuple[str, str]]:
    """Move every run folder of an older layout directly under ``runs_dir`` (relief_nb 0.1's names, 0.2
    development's flat names) to ``<experiment>/seed_<k>/``, NNrelief runs first so that baselines follow their
    references' new names; returns (old, new) names. Registered data are loaded to fingerprint them; a folder
    whose data or model cannot be found here is left as it is, with a message."""
    runs_dir = Path(runs_dir)
    found = []
    for config_path in sorted(runs_dir.glob("*/config.json")):
        try:
            found.append((config_path.parent, ExperimentConfig.from_dict(json.loads(config_path.read_text()))))
        except (ValueError, KeyError, TypeError) as err:
            print(f"left {config_path.parent.name} as it is (its config.json: {err})", file=sys.stderr)
    renamed: dict[str, str] = {}  # an NNrelief run's old folder names -> its experiment's new name
    moved = []
    for old, config in sorted(found, key=lambda item: item[1].is_baseline):
        if config.is_baseline and config.method.reference in renamed:
            config = override(config, reference=renamed[config.method.reference])
        try:
            run = Run(config, runs_dir, data_dir, device="cpu", progress=False)
            name = run.run_name()
        except Exception as err:  # custom data or models, absent data: nothing can name the folder here
            print(f"left {old.name} as it is ({type(err).__name__}: {err})", file=sys.stderr)
            continue
        if not config.is_baseline:
            renamed[old.name] = renamed[config.legacy_run_name()] = name.split("/")[0]
        target = runs_dir / name
        if target.exists():
            print(f"left {old.name} as it is ({name} exists)", file=sys.stderr)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(old, target)
        atomic_write(target / "config.json", json.dumps(config.to_dict(), indent=2))
        run._folder = target
        run._migrate_iterations()
        moved.append((old.name, name))
    return moved
