"""Networks as people bring them (issue 24, first part): outputs that are dicts, tuples or dataclasses; stochastic
depth / DropPath, which are the identity in eval; refusals that name the source line of the op."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from relief_nb import ReliefConfig, UnsupportedModuleError, export_pruned, relief_prune
from relief_nb.graph.trace import alive_units


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


class Difference(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(64, 16), nn.Linear(64, 16), nn.Linear(16, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.out(self.a(x) - self.b(x))  # a difference of two tensors carrying units


def test_a_refusal_names_the_source_line_of_an_op_in_the_models_own_forward():
    with pytest.raises(UnsupportedModuleError) as err:
        relief_prune(Difference().eval(), torch.rand(8, 1, 8, 8))
    message = str(err.value)
    assert "in the model's own forward" in message and "test_real_networks.py:" in message
    assert "self.out(self.a(x) - self.b(x))" in message and "\n" not in message


def _pruned_resnet50():
    from nets import resnet50

    torch.manual_seed(0)
    model = resnet50(width=16).eval()
    x = torch.rand(16, 3, 32, 32)
    relief_prune(model, x, ReliefConfig(0.9, 0.9))
    return model, x


def test_the_export_self_check_compares_in_float64_and_catches_a_slice_off_by_a_hair():
    """ResNet-50's export is checked in float64 (a correct export agrees to ~1e-12), so outputs off by 1e-5 relative,
    which float32's tolerance (rtol 1e-4) would let through, are refused."""
    from relief_nb.graph.export import ExportError, _check_against

    model, x = _pruned_resnet50()
    exported = export_pruned(model, (3, 32, 32))  # passes its own float64 check
    with torch.no_grad():
        exported.fc.weight *= 1 + 1e-5  # every logit scaled by 1 + 1e-5
        exported.fc.bias *= 1 + 1e-5
    with pytest.raises(ExportError, match="differs from the masked model"):
        _check_against(model, exported, (3, 32, 32), x[:8])


class CastsToFloat32(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 12), nn.Linear(12, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x.flatten(1))).float())


def test_a_forward_that_casts_to_float32_is_checked_in_its_own_precision():
    model = CastsToFloat32().eval()
    relief_prune(model, torch.rand(32, 16), ReliefConfig(alpha_fc=0.7))
    export_pruned(model, (16,))


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        h = self.fc(x)
        return h - h.flip(1)


class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.path, self.b, self.out = nn.Linear(8, 8), Inner(), nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, x):
        x = self.path(self.path(torch.relu(self.a(x))))
        return self.out(torch.relu(self.b(x)))


@pytest.mark.parametrize("names", [["path@1", "path"], ["path"], ["flip", "sub", "flip_1", "sub_1", "path.fc"]])
def test_ignore_takes_every_name_a_refusal_prints_and_prunes_around_it(names):
    with pytest.raises(UnsupportedModuleError, match=r"fx node (flip|sub)\w* inside module path"):
        relief_prune(CalledTwice().eval(), torch.rand(32, 8))
    model = CalledTwice().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = relief_prune(model, torch.rand(64, 8), ReliefConfig(alpha_fc=0.6), ignore=names)
    assert sum(layer.out_units - int(alive_units(layer).sum()) for layer in graph.layers()) > 0  # b, around it
    export_pruned(model, (8,), ignore=names)


def test_ignore_refuses_a_name_that_is_neither_a_module_nor_an_op():
    with pytest.raises(KeyError, match="'nope', which is not a module of the model nor an op"):
        relief_prune(CalledTwice().eval(), torch.rand(8, 8), ignore=["nope"])


@pytest.mark.parametrize("name", ["vit_mha", "torch_encoder"])
def test_torch_attention_is_kept_whole_reported_and_the_mlps_around_it_pruned(name):
    from nets import TorchEncoder, ViTMHA, token_batch

    make, x = {"vit_mha": (ViTMHA, torch.rand(64, 1, 28, 28)), "torch_encoder": (TorchEncoder, token_batch(64))}[name]
    torch.manual_seed(0)
    model = make().eval()
    graph = relief_prune(model, x, ReliefConfig(0.9, 0.9))  # no ignore= needed
    assert graph.kept_whole and all("attention" in why for why in graph.kept_whole.values())
    removed = sum(layer.out_units - int(alive_units(layer).sum()) for layer in graph.layers())
    assert removed > 0  # MLP hidden units (ViT: 8 of 256 here; encoder head: 12 of 48)
    exported = export_pruned(model, x)
    with torch.no_grad():
        torch.testing.assert_close(exported(x[:8]), model(x[:8]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mixer", "swin_like"])
def test_token_mixing_and_window_reshapes_are_followed(name):
    """MLP-Mixer's token-mixing Linear (over positions: kept whole, channels pass) and Swin's window partition and
    reverse (reshapes that move the batch dim and keep the channel axis whole)."""
    from nets import Mixer, SwinLike

    torch.manual_seed(0)
    model = {"mixer": Mixer, "swin_like": SwinLike}[name]().eval()
    x = torch.rand(64, 1, 28, 28)
    graph = relief_prune(model, x, ReliefConfig(0.8, 0.8))
    assert sum(layer.out_units - int(alive_units(layer).sum()) for layer in graph.layers()) > 0
    if name == "mixer":
        assert len(graph.kept_whole) == 4 and "blocks.0.token_mlp.0" in graph.kept_whole
        assert "blocks.0.token_mlp.0" not in graph.layer_map  # positions are not units: never pruned
    exported = export_pruned(model, x)
    with torch.no_grad():
        torch.testing.assert_close(exported(x[:8]), model(x[:8]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["vit_hand_written_attention", "shuffle_view"])
def test_a_reshape_that_splits_the_unit_axis_is_kept_whole_and_reported(name):
    """Attention's head split and ShuffleNet's view/transpose/view shuffle: the units reaching the reshape are kept
    (the report names it with its source line), everything around it is pruned, and the export equals the masked
    model."""
    from nets import ShuffleViewNet, ViT

    from relief_nb import layer_table

    torch.manual_seed(0)
    model, shape = (ViT(), (1, 28, 28)) if name.startswith("vit") else (ShuffleViewNet(), (3, 16, 16))
    model.eval()
    x = torch.rand(64, *shape)
    graph = relief_prune(model, x, ReliefConfig(0.8, 0.8))
    assert sum(layer.out_units - int(alive_units(layer).sum()) for layer in graph.layers()) > 0
    rows = layer_table(model, graph)
    reported = rows[rows.kind.str.startswith("kept whole (a reshape splits the unit axis")]
    assert len(reported) >= 1 and reported.kind.str.contains(r"nets\.py:\d+").all()
    exported = export_pruned(model, x)
    with torch.no_grad():
        torch.testing.assert_close(exported(x[:8]), model(x[:8]), rtol=1e-4, atol=1e-5)


def test_library_modules_declared_with_declare_layer_prune_and_export():
    """timm-style BatchNormAct2d, LayerNorm2d and an untraceable stochastic depth, declared once, in a ConvNeXt-like
    network (depthwise 7x7, channels-last LayerNorm, Linear MLP, layer scale)."""
    import nets

    from relief_nb import declare_layer

    torch.manual_seed(0)
    model = nets.ConvNeXtLike().eval()
    x = torch.rand(32, 3, 32, 32)
    with pytest.raises(UnsupportedModuleError, match="torch.fx cannot trace"):  # before: the stochastic depth
        relief_prune(model, x)
    for cls, role in [(nets.BatchNormAct2d, "batchnorm"), (nets.LayerNorm2d, "layernorm"),
                      (nets.RandomDepth, "identity")]:
        declare_layer(cls, role)
    graph = relief_prune(model, x, ReliefConfig(0.9, 0.9))
    assert graph.layer("down.1").out_units - int(alive_units(graph.layer("down.1")).sum()) > 0
    exported = export_pruned(model, x)
    assert isinstance(exported.down[2], nets.BatchNormAct2d)  # sliced, not folded: its activation stays
    assert exported.down[2].num_features == exported.down[1].out_channels < 32
    with torch.no_grad():
        torch.testing.assert_close(exported(x[:8]), model(x[:8]), rtol=1e-4, atol=1e-5)


def test_declare_layer_refuses_what_it_cannot_mean():
    from relief_nb import declare_layer

    with pytest.raises(ValueError, match="computes must be one of"):
        declare_layer(nn.Linear, "attention")
    with pytest.raises(ValueError, match="only as a subclass of Linear"):
        declare_layer(nn.Module, "linear")


class LayerScaled(nn.Module):
    """A per-channel learned scale (CaiT's and ConvNeXt's layer scale) between two Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 32))

    def forward(self, x):
        return self.fc2(torch.relu(self.gamma * self.fc1(x.flatten(1))))


def test_a_layer_scale_parameter_is_sliced_with_its_channels():
    from relief_nb import CompactModel

    torch.manual_seed(0)
    model = LayerScaled().eval()
    x = torch.rand(64, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = relief_prune(model, x, ReliefConfig(alpha_fc=0.6))
    exported = export_pruned(model, x)
    assert exported.gamma.numel() == exported.fc1.out_features < 32
    compact = CompactModel(model, graph)
    compact.check((1, 8, 8), x[:8])
    assert compact.model.gamma.numel() == compact.model.fc1.out_features
    with torch.no_grad():
        compact.model.gamma.mul_(2)
    compact.write_back()  # the doubled kept entries go back to the full model's gamma
    kept = alive_units(graph.layer("fc1"))
    assert torch.allclose(model.gamma[kept], 2 * torch.linspace(0.5, 1.5, 32)[kept])
