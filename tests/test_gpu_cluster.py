"""Sweeps choose their local cluster: dask-cuda's LocalCUDACluster only when CUDA is present (faked here at the
function that decides), a CPU LocalCluster otherwise; dask-cuda is never needed on the CPU."""

from __future__ import annotations

import sys
import types

import pytest

from relief_nb.sweeps import cluster


def test_cpu_machines_get_one_single_threaded_process_per_core():
    kind, kwargs = cluster.local_cluster_plan("auto", cuda=False)
    assert kind == "cpu" and kwargs["threads_per_worker"] == 1 and kwargs["processes"] is True


def test_cuda_machines_get_a_worker_per_gpu_running_several_runs():
    kind, kwargs = cluster.local_cluster_plan("auto", runs_per_gpu=4, cuda=True)
    assert kind == "cuda" and kwargs["threads_per_worker"] == 4


def test_device_cpu_keeps_the_cpu_cluster_on_a_gpu_machine():
    assert cluster.local_cluster_plan("cpu", cuda=True)[0] == "cpu"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_runs_per_gpu_is_checked(bad):
    with pytest.raises(ValueError, match="runs_per_gpu must be an integer >= 1"):
        cluster.local_cluster_plan("auto", runs_per_gpu=bad, cuda=True)


def test_the_cuda_cluster_is_started_from_dask_cuda(monkeypatch):
    made = {}

    class FakeLocalCUDACluster:
        def __init__(self, **kwargs):
            made.update(kwargs)

    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(LocalCUDACluster=FakeLocalCUDACluster))
    started = cluster.start_local_cluster("auto", runs_per_gpu=3, cuda=True)
    assert isinstance(started, FakeLocalCUDACluster) and made["threads_per_worker"] == 3


def test_without_dask_cuda_a_gpu_machine_falls_back_and_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # import fails
    made = {}

    class FakeLocalCluster:
        def __init__(self, **kwargs):
            made.update(kwargs)

    import distributed

    monkeypatch.setattr(distributed, "LocalCluster", FakeLocalCluster)
    with pytest.warns(UserWarning, match=r"pip install 'relief_nb\[gpu\]'"):
        started = cluster.start_local_cluster("auto", cuda=True)
    assert isinstance(started, FakeLocalCluster) and made["threads_per_worker"] == 1


def test_the_cpu_path_never_imports_dask_cuda(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_cuda", None)
    made = {}

    class FakeLocalCluster:
        def __init__(self, **kwargs):
            made.update(kwargs)

    import distributed

    monkeypatch.setattr(distributed, "LocalCluster", FakeLocalCluster)
    assert isinstance(cluster.start_local_cluster("auto", cuda=False), FakeLocalCluster)
