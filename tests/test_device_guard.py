"""Device-correct everywhere, checked on the CPU: under :class:`device_guard.DeviceGuard` (a stand-in for a GPU),
the pass, every method, export and a compact retraining stage create no tensor on the wrong device, on every
registry model and the test zoo. Before the fix the residual gate's ``back()`` made its mask on the CPU: the
guard reported it, as CUDA crashed on it."""

from __future__ import annotations

import pytest
import torch
from device_guard import DeviceGuard
from nets import ZOO

from relief_nb import (
    Budget,
    CompactModel,
    ReliefConfig,
    TrainConfig,
    create_model,
    export_pruned,
    get_method,
    input_shape_of,
    list_methods,
    list_models,
    make_optimizer,
    relief_prune,
    trace_model,
)
from relief_nb.graph.nodes import Gate


def build(name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    if name in ZOO:
        factory, shape, _ = ZOO[name]
        torch.manual_seed(0)
        return factory().eval(), shape
    shape = input_shape_of(name)
    return create_model(name, 10, seed=0, input_shape=shape).eval(), shape


def guarded(model, batch, fn):
    guard = DeviceGuard(model, batch)
    with guard:
        result = fn()
    assert guard.violations == [], "\n".join(guard.violations[:5])
    return result


@pytest.mark.parametrize("name", [*list_models(), *ZOO])
def test_the_pass_and_export_keep_every_tensor_on_the_models_device(name):
    model, shape = build(name)
    batch = torch.rand(8, *shape)
    ignore = tuple(ZOO[name][2](model)) if name in ZOO else ()
    config = ReliefConfig(alpha_conv=0.9, alpha_fc=0.9)
    guarded(model, batch, lambda: relief_prune(model, batch, config, ignore=ignore))
    probe = torch.randn(4, *shape)
    exported = guarded(model, probe, lambda: export_pruned(model, shape, probe=probe, ignore=ignore))
    assert isinstance(exported, torch.nn.Module)


@pytest.mark.parametrize("method", [m for m in list_methods() if m != "relief"])
@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_every_baseline_keeps_every_tensor_on_the_models_device(name, method):
    model, shape = build(name)
    batch, labels = torch.rand(8, *shape), torch.randint(0, 10, (8,))
    reference, _ = build(name)
    relief_prune(reference, batch, ReliefConfig(alpha_conv=0.9, alpha_fc=0.9))
    budget = Budget.of(trace_model(reference, shape))
    graph = trace_model(model, shape)
    generator = torch.Generator().manual_seed(0)
    guarded(model, (batch, labels), lambda: get_method(method).prune(graph, batch, labels, budget, generator))


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_a_compact_retraining_stage_keeps_every_tensor_on_the_models_device(name):
    model, shape = build(name)
    batch = torch.rand(8, *shape)
    relief_prune(model, batch, ReliefConfig(alpha_conv=0.8, alpha_fc=0.8))
    graph = trace_model(model, shape)

    def stage():
        compact = CompactModel(model, graph)
        compact.check(shape, batch[:4])
        opt, _ = make_optimizer(compact.model, TrainConfig(1, lr=1e-3))
        compact.model.train()
        loss = compact.model(batch).square().mean()
        loss.backward()
        opt.step()
        compact.write_back()
        return compact.optimizer_state_to_full(opt.state_dict())

    guarded(model, batch, stage)


def test_the_guard_reports_a_cpu_tensor_meeting_a_device_tensor():
    """The guard is not blind: the residual gate's old back() (mask made on the CPU) is reported."""
    model = torch.nn.Module()
    model.register_buffer("shortcut_mask", torch.ones(4))
    gate = Gate(model, "shortcut_mask")
    need = torch.tensor([True, False, True, True])  # the graph's bookkeeping: a CPU tensor
    guard = DeviceGuard(model)
    with guard:
        gate.mask.mul_(need.to(gate.mask.dtype))  # before the fix: no device given
    assert len(guard.violations) == 1 and "mul_" in guard.violations[0]
    guard = DeviceGuard(model)
    with guard:
        assert gate.close(need).tolist() == [True, False, True, True]
    assert guard.violations == []
    assert model.shortcut_mask.tolist() == [1, 0, 1, 1]


def test_device_reads_as_not_the_cpu_under_the_guard():
    """CPU-only fast paths (the compiled kernel, numpy's sort) are skipped, as on a GPU."""
    x = torch.ones(3)
    with DeviceGuard(x):
        assert x.device.type != "cpu"
        y = torch.zeros(3, device=x.device)
        assert y.device.type != "cpu"  # created "on the device"
    assert torch.zeros(3).device.type == "cpu"
