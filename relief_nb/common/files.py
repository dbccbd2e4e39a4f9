"""Files written whole or not at all: every file a run, a sweep or a notebook session writes goes through
:func:`atomic_write`, so an interruption, a full disk or a crash never leaves a half-written result in place of
a good one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, data: str | bytes | None = None, *,
                 writer: Callable[[IO[bytes]], object] | None = None) -> Path:
    """Write ``data`` (text as UTF-8, or bytes), or whatever ``writer(file)`` writes, to ``path`` atomically: into
    ``.<name>.tmp`` beside it, flushed to disk, then renamed over ``path``. On any failure the temporary file is
    removed and ``path`` is left as it was."""
    path = Path(path)
    if (data is None) == (writer is None):
        raise TypeError("atomic_write takes either data or writer")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            if writer is not None:
                writer(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
