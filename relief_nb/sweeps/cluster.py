"""Where a sweep's runs execute: one Dask task per run folder (:func:`execute_run`, one torch thread, glibc's
allocator restored), on the client a scheduler gives (a LocalCluster of one single-threaded process per core by
default, ``$DASK_SCHEDULER_ADDRESS``, an address, or a cluster object such as dask-jobqueue's)."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..experiments.config import ExperimentConfig
from ..experiments.run import Run

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["SCHEDULER_ENV", "execute_run", "local_cluster_plan", "run_done", "start_local_cluster"]

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


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="finished runs", unit="run", disable=not enabled)
