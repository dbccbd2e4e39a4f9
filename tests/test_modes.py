"""eval_mode: the one eval-mode switch, and every caller that uses it leaves the model's flags as they were."""

import pytest
import torch
from torch import nn

from relief_nb.core.modes import eval_mode
from relief_nb.data.datasets import synthetic_dataset
from relief_nb.experiments.training import evaluate
from relief_nb.graph.export import export_pruned
from relief_nb.graph.structure import trace_model
from relief_nb.models.zoo import create_model
from relief_nb.pruning import relief as relief_module
from relief_nb.pruning.metrics import dense_flops_torch
from relief_nb.pruning.relief import relief_prune, score_layers


def flags(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def mixed_lenet5() -> nn.Module:
    """LeNet-5 in training mode with one submodule deliberately left in eval mode."""
    model = create_model("lenet5", seed=0).train()
    model.pool1.eval()
    return model


def test_eval_mode_switches_and_restores_every_flag():
    model = mixed_lenet5()
    before = flags(model)
    assert len(set(before.values())) == 2
    with eval_mode(model) as inside:
        assert inside is model
        assert not any(flags(model).values())
        assert not torch.is_grad_enabled()
    assert flags(model) == before and torch.is_grad_enabled()


def test_eval_mode_restores_on_exceptions_and_can_keep_gradients():
    model = mixed_lenet5()
    before = flags(model)
    with pytest.raises(RuntimeError, match="inside"), eval_mode(model):
        raise RuntimeError("inside the block")
    assert flags(model) == before and torch.is_grad_enabled()
    with eval_mode(model, no_grad=False):
        assert torch.is_grad_enabled() and not model.training
    assert flags(model) == before


@pytest.mark.parametrize("call", ["relief_prune", "relief_prune fails", "score_layers", "trace_model",
                                  "dense_flops_torch", "evaluate", "export_pruned"])
def test_callers_leave_the_training_flags_as_they_were(call, monkeypatch):
    model = mixed_lenet5()
    x = torch.rand(16, 1, 28, 28)
    if call == "export_pruned":
        relief_prune(model, x)
    before = flags(model)
    if call == "relief_prune":
        relief_prune(model, x)
    elif call == "relief_prune fails":
        monkeypatch.setattr(relief_module, "_backward_sweep", lambda graph: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            relief_prune(model, x)
    elif call == "score_layers":
        score_layers(model, x)
    elif call == "trace_model":
        trace_model(model, (1, 28, 28))
    elif call == "dense_flops_torch":
        dense_flops_torch(model, (1, 28, 28))
    elif call == "evaluate":
        ds = synthetic_dataset("mnist", n_train=10, n_test=20)
        evaluate(model, ds.test_x, ds.test_y, ds, torch.device("cpu"), batch_size=8)
    else:
        export_pruned(model, (1, 28, 28))
    assert flags(model) == before
