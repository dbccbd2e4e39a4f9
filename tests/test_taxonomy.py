"""The layer taxonomy (relief_nb/graph/taxonomy.py): every torch.nn module class classified, the docs generated
from it, subclasses of torch.nn layers treated as the layer they are, every f(0) = 0 activation followed, and the
others refused in one line that names the class, its role and why."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relief_nb import ReliefConfig, UnsupportedModuleError, export_pruned, relief_prune
from relief_nb.graph.taxonomy import LAYER_ROLES, acts_as_torch_layer, markdown, role_of

ROOT = Path(__file__).resolve().parent.parent


def torch_nn_classes() -> list[type]:
    """Every public Module class of torch.nn, found by introspection (a new torch release adds rows)."""
    return sorted({c for name in dir(nn) if not name.startswith("_") and isinstance(c := getattr(nn, name), type)
                   and issubclass(c, nn.Module)}, key=lambda c: c.__name__)


@pytest.mark.parametrize("klass", torch_nn_classes(), ids=lambda c: c.__name__)
def test_every_torch_nn_module_class_is_classified(klass):
    assert klass in LAYER_ROLES, f"nn.{klass.__name__} is not classified in relief_nb/graph/taxonomy.py"


def test_the_supported_layers_page_is_generated_from_the_table():
    assert (ROOT / "docs" / "supported-layers.md").read_text() == markdown(), \
        "docs/supported-layers.md is stale: run python docs/make_supported_layers.py"


class MyLinear(nn.Linear):
    pass


class ScaledLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_a_subclass_with_the_base_forward_is_that_layer():
    assert acts_as_torch_layer(MyLinear(3, 4)) and role_of(MyLinear).role == "weighted sum"
    assert not acts_as_torch_layer(ScaledLinear(3, 4)) and not acts_as_torch_layer(nn.Linear(3, 4))


def mlp(act: nn.Module | None, functional=None, linear=nn.Linear) -> nn.Module:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.out = linear(64, 48), linear(48, 32), linear(32, 10)
            self.act = act

        def forward(self, x):
            x = torch.flatten(x, 1)
            f = functional or self.act
            return self.out(f(self.fc2(f(self.fc1(x)))))

    torch.manual_seed(0)
    return Net().eval()


def prune_and_export(model: nn.Module) -> int:
    """Prune once, export, check the outputs agree; return the units removed."""
    x = torch.rand(64, 1, 8, 8)
    relief_prune(model, x, ReliefConfig(alpha_fc=0.6))
    exported = export_pruned(model, (1, 8, 8))
    probe = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(exported(probe), model(probe), rtol=1e-4, atol=1e-5)
    before = sum(m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    return before - sum(m.out_features for m in exported.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("act", [nn.Mish(), nn.SELU(), nn.CELU(), nn.Softsign(), nn.Hardtanh(), nn.Tanhshrink(),
                                 nn.Hardshrink(0.01), nn.Softshrink(0.01), nn.ReLU()], ids=lambda a: type(a).__name__)
def test_every_zero_preserving_activation_prunes_and_exports(act):
    assert prune_and_export(mlp(act)) > 0  # alpha_fc=0.6 on 64 -> 48 -> 32 units leaves some without input


@pytest.mark.parametrize("fn", [F.mish, F.selu, F.softsign, F.hardtanh], ids=lambda f: f.__name__)
def test_their_functional_forms_too(fn):
    assert prune_and_export(mlp(None, functional=fn)) > 0


def test_a_linear_subclass_prunes_and_exports():
    assert prune_and_export(mlp(nn.ReLU(), linear=MyLinear)) > 0


@pytest.mark.parametrize(("layer", "role"), [(nn.Threshold(0.1, 20.0), "elementwise, f(0) != 0"),
                                             (nn.Softmin(dim=1), "channel mixing"),
                                             (nn.Softmax(dim=1), "channel mixing")])
def test_what_is_not_followed_is_refused_naming_class_role_and_reason(layer, role):
    with pytest.raises(UnsupportedModuleError) as err:
        relief_prune(mlp(layer), torch.rand(8, 1, 8, 8))
    message = str(err.value)
    assert type(layer).__name__ in message and role in message and "\n" not in message
