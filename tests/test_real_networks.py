"""Networks as people bring them (issue 24, first part): outputs that are dicts, tuples or dataclasses; stochastic
depth / DropPath, which are the identity in eval; refusals that name the source line of the op."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from relief_nb import ReliefConfig, UnsupportedModuleError, export_pruned, relief_prune


@dataclass
class Heads:
    logits: torch.Tensor
    features: torch.Tensor


class MultiOutput(nn.Module):
    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self.fc1, self.fc2, self.out = nn.Linear(64, 48), nn.Linear(48, 32), nn.Linear(32, 10)

    def forward(self, x):
        h = torch.relu(self.fc2(torch.relu(self.fc1(torch.flatten(x, 1)))))
        logits = self.out(h)
        if self.form == "dict":
            return {"logits": logits, "aux": [h]}
        if self.form == "tuple":
            return logits, h
        return Heads(logits, h)


@pytest.mark.parametrize("form", ["dict", "tuple", "dataclass"])
def test_outputs_of_any_form_prune_and_export(form):
    torch.manual_seed(0)
    model = MultiOutput(form).eval()
    relief_prune(model, torch.rand(64, 1, 8, 8), ReliefConfig(alpha_fc=0.6))
    exported = export_pruned(model, (1, 8, 8))
    assert exported.fc1.out_features < 48  # units removed, and the export matched the masked model (self-check)


class DropPath(nn.Module):
    """Stochastic depth as timm and torchvision write it: random in training, the identity in eval."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = (torch.rand(x.shape[0], 1, device=x.device) >= self.p).to(x.dtype)
        return x * keep / (1 - self.p)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.fc1, self.fc2, self.out = nn.Linear(64, 32), nn.Linear(32, 64), nn.Linear(64, 32), \
            nn.Linear(32, 10)
        self.drop_path = DropPath(0.5)

    def forward(self, x):
        x = self.inp(torch.flatten(x, 1))
        x = x + self.drop_path(self.fc2(torch.relu(self.fc1(x))))
        return self.out(x)


def test_stochastic_depth_is_the_identity_in_the_graph_and_random_in_training():
    torch.manual_seed(0)
    model = Residual().train()  # pruned as it is found, in training mode
    relief_prune(model, torch.rand(64, 1, 8, 8), ReliefConfig(alpha_fc=0.7))
    assert model.training and model.drop_path.training  # modes left as they were
    x = torch.rand(16, 1, 8, 8)
    assert not torch.equal(model(x), model(x))  # training behaviour untouched: still random
    export_pruned(model, (1, 8, 8))


class Product(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(64, 16), nn.Linear(64, 16), nn.Linear(16, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.out(self.a(x) * self.b(x))  # a product of two tensors carrying units


def test_a_refusal_names_the_source_line_of_an_op_in_the_models_own_forward():
    with pytest.raises(UnsupportedModuleError) as err:
        relief_prune(Product().eval(), torch.rand(8, 1, 8, 8))
    message = str(err.value)
    assert "in the model's own forward" in message and "test_real_networks.py:" in message
    assert "self.out(self.a(x) * self.b(x))" in message and "\n" not in message
