"""Where a sweep's runs execute: one Dask task per run folder (:func:`execute_run`, one torch thread, glibc's
allocator restored), on the client a scheduler gives (a LocalCluster of one single-threaded process per core by
default, ``$DASK_SCHEDULER_ADDRESS``, an address, or a cluster object such as dask-jobqueue's)."""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..experiments.config import ExperimentConfig
from ..experiments.run import Run

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["SCHEDULER_ENV", "EpochProgress", "epochs_done", "epochs_planned", "execute_run", "local_cluster_plan",
           "run_done", "start_local_cluster"]

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


def run_done(folder: str | os.PathLike) -> bool:
    """Whether the run stored in ``folder`` has made every iteration its config asks for (see
    :meth:`Run.finished`; a folder without ``config.json`` is not done)."""
    folder = Path(folder)
    return (folder / "config.json").exists() and Run.at(folder).finished()


def execute_run(config: ExperimentConfig, runs_dir: str | os.PathLike, data_dir: str | os.PathLike,
                device: str = "auto", threads: int | None = 1, reference: Any = None) -> pd.DataFrame:
    """Execute (or resume) one run folder and return its metrics: the body of every Dask task.

    ``threads`` sets torch's intra-op threads for the call (1 on a cluster of one process per core);
    ``reference`` is the NNrelief reference's result, passed only so that Dask orders the tasks."""
    import torch

    _restore_malloc()
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return Run(config, runs_dir, data_dir, device, progress=False).run()
    finally:
        torch.set_num_threads(previous)


def _restore_malloc() -> None:
    """Undo ``MALLOC_TRIM_THRESHOLD_`` (set by Dask's nanny) in this process: trim above 128 MiB and let large
    blocks come from the heap below 32 MiB, as glibc's dynamic threshold would. No-op off glibc or when unset."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:  # mallopt has no Python binding; ctypes is the only way to reach it
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl and other libcs do not read the variable
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    libc.mallopt(m_trim_threshold, 128 << 20)
    libc.mallopt(m_mmap_threshold, 32 << 20)


def local_cluster_plan(device: str = "auto", runs_per_gpu: int = 1, cuda: bool | None = None) -> tuple[str, dict]:
    """Which local cluster a sweep starts when no scheduler is given, and its keywords.

    With CUDA present (and ``device`` not ``cpu``): dask-cuda's ``LocalCUDACluster``, one worker per GPU with
    ``CUDA_VISIBLE_DEVICES`` pinned, running ``runs_per_gpu`` runs at a time (threads of that worker: small models
    leave a GPU mostly idle, and eight LeNet runs sharing one H200 gave 4x the throughput of one). Otherwise a
    ``LocalCluster`` of one single-threaded process per core. ``cuda`` overrides the detection (tests)."""
    if isinstance(runs_per_gpu, bool) or not isinstance(runs_per_gpu, int) or runs_per_gpu < 1:
        raise ValueError(f"runs_per_gpu must be an integer >= 1, got {runs_per_gpu!r}; for example runs_per_gpu=4")
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if cuda and device != "cpu":
        return "cuda", {"threads_per_worker": runs_per_gpu, "dashboard_address": ":0"}
    return "cpu", {"n_workers": os.cpu_count() or 1, "threads_per_worker": 1, "processes": True,
                   "dashboard_address": ":0"}


def start_local_cluster(device: str = "auto", runs_per_gpu: int = 1, cuda: bool | None = None) -> Any:
    """The cluster :func:`local_cluster_plan` chooses; on a GPU machine without dask-cuda, a CPU ``LocalCluster``
    whose tasks still train on the GPU, with a warning that names the package."""
    from distributed import LocalCluster

    kind, kwargs = local_cluster_plan(device, runs_per_gpu, cuda)
    if kind == "cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            warnings.warn("CUDA is present but dask-cuda is not installed: the sweep runs on a CPU LocalCluster, "
                          "each task on the GPU; pip install 'relief_nb[gpu]' for one worker per GPU", stacklevel=2)
        else:
            return LocalCUDACluster(**kwargs)
    return LocalCluster(**local_cluster_plan("cpu", runs_per_gpu, cuda=False)[1])


def _connect(scheduler: Any, device: str = "auto", runs_per_gpu: int = 1) -> tuple[Client, list[Any]]:
    """A client for ``scheduler`` and what to close afterwards, in order (what this call made, nothing else)."""
    from distributed import Client

    if scheduler is None:
        scheduler = os.environ.get(SCHEDULER_ENV) or None
    if isinstance(scheduler, Client):
        return scheduler, []
    if scheduler is None:
        cluster = start_local_cluster(device, runs_per_gpu)
        client = Client(cluster)
        return client, [client, cluster]
    client = Client(scheduler)  # an address, or a cluster object (LocalCluster, SLURMCluster, ...)
    return client, [client]


def _dashboard(client: Client) -> str | None:
    try:
        has_dashboard = "dashboard" in client.scheduler_info().get("services", {})
    except Exception:
        has_dashboard = False
    return client.dashboard_link if has_dashboard else None


def epochs_planned(config: ExperimentConfig) -> int:
    """The training epochs a run makes: pretraining (none for a baseline, which starts from its reference's
    pretrained model) and every iteration's retraining (fewer if a target or tolerance stops it early)."""
    return _pretrain_epochs(config) + config.schedule.iterations * config.schedule.retrain.epochs


def _pretrain_epochs(config: ExperimentConfig) -> int:
    return 0 if config.method.reference is not None else config.schedule.pretrain.epochs


def epochs_done(folder: str | os.PathLike, config: ExperimentConfig) -> int:
    """The epochs a run folder has finished, read from its checkpoint (memory-mapped, so cheap while it runs)."""
    import torch

    try:
        saved = torch.load(Path(folder) / "checkpoint.pt", map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # not started yet, or being replaced: nothing to count
        return 0
    if saved.get("done"):
        return epochs_planned(config)
    if saved.get("phase") == "pretrain":
        return int(saved.get("epoch", 0))
    before = _pretrain_epochs(config) + (int(saved.get("iteration", 1)) - 1) * config.schedule.retrain.epochs
    return before + (int(saved.get("epoch", 0)) if saved.get("phase") == "retrain" else 0)


class EpochProgress:
    """A sweep's progress bar in epochs over all its runs (and finished runs in its postfix), so a sweep of long
    runs moves from its first minute, not when its first run ends: run folders are polled every ``every`` seconds
    (:func:`epochs_done`)."""

    def __init__(self, runs: dict[str, tuple[Path, ExperimentConfig]], enabled: bool, every: float = 5.0) -> None:
        from tqdm.auto import tqdm

        self.runs, self.every, self.finished = runs, every, 0
        self.done = {name: 0 for name in runs}
        self.bar = tqdm(total=sum(epochs_planned(c) for _, c in runs.values()), desc="sweep", unit="epoch",
                        disable=not enabled)
        self.bar.set_postfix_str(f"0/{len(runs)} runs")
        self._last = 0.0

    def poll(self, force: bool = False) -> None:
        if self.bar.disable or (not force and time.monotonic() - self._last < self.every):
            return
        self._last = time.monotonic()
        for name, (folder, config) in self.runs.items():
            if self.done[name] < epochs_planned(config):
                self.done[name] = epochs_done(folder, config)
        self._show()

    def run_finished(self, name: str) -> None:
        self.finished += 1
        self.done[name] = epochs_planned(self.runs[name][1])  # a failed run counts as done too: nothing left
        self._show()

    def _show(self) -> None:
        self.bar.n = sum(self.done.values())
        self.bar.set_postfix_str(f"{self.finished}/{len(self.runs)} runs")
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
