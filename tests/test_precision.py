"""The scoring pass, the baselines' saliency passes and the export / compaction self-checks run in full float32
(TF32 off) whatever the user's global settings, and leave those settings as they found them."""

from __future__ import annotations

import pytest
import torch

from relief_nb import (
    Budget,
    CompactModel,
    ReliefConfig,
    create_model,
    export_pruned,
    get_method,
    relief_prune,
    score_layers,
    trace_model,
)
from relief_nb.core import precision
from relief_nb.core.precision import strict_fp32, tf32_settings
from relief_nb.pruning import relief as relief_module


@pytest.fixture
def tf32_on():
    """The user's global settings: TF32 allowed everywhere (restored after the test)."""
    switches = precision._switches()
    saved = [getattr(owner, attr) for owner, attr, _, _ in switches]
    for owner, attr, _, _ in switches:
        setattr(owner, attr, "tf32" if attr == "fp32_precision" else True)
    user = tf32_settings()
    assert all(v in ("tf32", True) for v in user.values())
    yield user
    for (owner, attr, _, _), value in zip(switches, saved):
        setattr(owner, attr, value)


def spy(model: torch.nn.Module) -> list[dict]:
    """Record the TF32 settings at every forward of the model's first layer."""
    seen: list[dict] = []
    first = next(m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    first.register_forward_pre_hook(lambda m, a: seen.append(tf32_settings()))
    return seen


def strict(seen: list[dict]) -> bool:
    return bool(seen) and all(v in ("ieee", False) for s in seen for v in s.values())


def test_the_pass_scores_in_full_float32_and_restores_the_settings(tf32_on):
    model = create_model("lenet5", 10, seed=0)
    seen = spy(model)
    relief_prune(model, torch.rand(16, 1, 28, 28), ReliefConfig(alpha_conv=0.9, alpha_fc=0.9))
    assert strict(seen)
    assert tf32_settings() == tf32_on
    seen.clear()
    score_layers(model, torch.rand(16, 1, 28, 28))
    assert strict(seen) and tf32_settings() == tf32_on


def test_settings_are_restored_when_the_pass_fails(tf32_on, monkeypatch):
    monkeypatch.setattr(relief_module, "_backward_sweep", lambda graph: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        relief_prune(create_model("lenet300-100", 10, seed=0), torch.rand(8, 1, 28, 28))
    assert tf32_settings() == tf32_on


def test_export_and_compaction_checks_run_in_full_float32(tf32_on):
    model = create_model("resnet20", 10, seed=0).eval()
    relief_prune(model, torch.rand(8, 3, 32, 32), ReliefConfig(alpha_conv=0.8, alpha_fc=0.8))
    seen = spy(model)
    export_pruned(model, (3, 32, 32))
    assert strict(seen) and tf32_settings() == tf32_on
    graph = trace_model(model, (3, 32, 32))
    seen.clear()
    CompactModel(model, graph).check((3, 32, 32))
    assert strict(seen) and tf32_settings() == tf32_on


@pytest.mark.parametrize("method", ["snip", "magact"])
def test_saliency_baselines_score_in_full_float32(tf32_on, method):
    reference = create_model("lenet5", 10, seed=0)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    relief_prune(reference, x, ReliefConfig(alpha_conv=0.9, alpha_fc=0.9))
    model = create_model("lenet5", 10, seed=0)
    graph = trace_model(model, (1, 28, 28))
    seen = spy(model)
    get_method(method).prune(graph, x, y, Budget.of(trace_model(reference, (1, 28, 28))), torch.Generator())
    assert strict(seen) and tf32_settings() == tf32_on


def test_strict_fp32_nests():
    before = tf32_settings()
    with strict_fp32():
        with strict_fp32():
            assert all(v in ("ieee", False) for v in tf32_settings().values())
        assert all(v in ("ieee", False) for v in tf32_settings().values())
    assert tf32_settings() == before
