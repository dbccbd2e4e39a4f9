"""The fx dependency graph: merges, concatenation, shared modules, new activations, grouped convs, refusals."""

from __future__ import annotations

import pytest
import torch
from nets import (
    ConcatNet,
    ForwardResidual,
    GeluMLP,
    MobileNetV2,
    ViT,
    resnet18,
    resnet50,
    vit_attention_paths,
)
from torch import nn

from relief_nb.core.masks import current_mask, mask_snapshot
from relief_nb.graph.trace import UnsupportedModuleError, layer_reads
from relief_nb.pruning.relief import ReliefConfig, _backward_sweep, _mask_removed_norms, alive_units, relief_prune


def check_consistent(model: nn.Module, graph) -> None:
    """A removed unit reads nothing and is read by nobody; backward pruning and norm masking are complete."""
    alive = {layer.name: alive_units(layer).cpu() for layer in graph.layers()}
    for reader in graph.layers():
        reads = layer_reads(reader).cpu()
        present = torch.zeros(len(reads), dtype=torch.bool)
        live = torch.zeros_like(present)
        for src, idx in reader.input_map.items():
            here = idx >= 0
            present |= here
            live |= here & alive[src][idx.clamp(min=0)]
        removed = present & ~live & ~reader.input_fixed
        assert not reads[removed].any(), f"{reader.name} reads removed units"
        dead_rows = ~alive[reader.name]
        w = current_mask(reader.module).reshape(reader.out_units, -1)
        assert not w[dead_rows].any()
    for norm in graph.norms:
        if norm.direct is not None and getattr(norm.module, "weight", None) is not None:
            removed = ~alive[norm.direct]
            assert not current_mask(norm.module, "weight").bool()[removed].any(), norm.name
    before = mask_snapshot(model)
    _backward_sweep(graph)
    _mask_removed_norms(graph)
    for key, mask in mask_snapshot(model).items():
        assert torch.equal(mask, before[key]), f"backward pruning was incomplete at {key}"


MILD = ReliefConfig(0.9, 0.95)


def prune_and_check(model, shape, config=MILD, passes=2, n=16, ignore=()):
    x = torch.rand(n, *shape)
    model.eval()
    for _ in range(passes):
        graph = relief_prune(model, x, config, ignore=ignore)
    check_consistent(model, graph)
    out = model(x)
    assert torch.isfinite(out).all()
    return graph


CASES = {
    "concat": (ConcatNet, (3, 8, 8), ()),
    "forward-residual": (ForwardResidual, (3, 8, 8), ()),
    "gelu-mlp": (GeluMLP, (1, 28, 28), ()),
    "resnet18": (resnet18, (3, 16, 16), ()),
    "resnet50": (resnet50, (3, 16, 16), ()),
    "mobilenetv2": (MobileNetV2, (3, 16, 16), ()),
    "vit": (ViT, (1, 28, 28), "attn"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_masks_stay_consistent_across_every_merge(case):
    build, shape, ignore = CASES[case]
    torch.manual_seed(0)
    model = build()
    paths = vit_attention_paths(model) if ignore == "attn" else ()
    graph = prune_and_check(model, shape, ignore=paths)
    pruned = [layer.name for layer in graph.layers() if (current_mask(layer.module) == 0).any()]
    assert pruned, "nothing was pruned"
    for path in paths:  # ignored layers stay dense
        assert not any(hasattr(m, "weight_mask") for m in model.get_submodule(path).modules())


@pytest.mark.parametrize("alpha", [0.5, 0.7, 0.9, 0.99, 1.0])
def test_concat_of_parallel_convs_at_every_alpha(alpha):
    torch.manual_seed(0)
    prune_and_check(ConcatNet(), (3, 8, 8), ReliefConfig(alpha, alpha))


def test_concat_backward_pruning_follows_both_branches():
    torch.manual_seed(0)
    model = ConcatNet()
    with torch.no_grad():
        model.fc.weight[:, 3] = 0  # channel 3 of branch a is read by nobody
        model.fc.weight[:, 8 + 1] = 0  # channel 1 of branch b is read by nobody
        model.a.weight[:, 5] = 0
        model.b.weight[:, 5] = 0  # stem channel 5: read by neither branch
        model.a.weight[:, 6] = 0  # stem channel 6: still read by branch b
    relief_prune(model, torch.rand(8, 3, 8, 8), ReliefConfig(1.0, 1.0, dead_units=False))
    assert current_mask(model.a)[3].sum() == 0 and current_mask(model.a)[1].sum() > 0
    assert current_mask(model.b)[1].sum() == 0 and current_mask(model.b)[3].sum() > 0
    assert current_mask(model.stem)[5].sum() == 0 and current_mask(model.stem, "bias")[5] == 0
    assert current_mask(model.stem)[6].sum() > 0


def test_forward_residual_channel_removed_only_when_every_branch_gives_it_up():
    torch.manual_seed(0)
    model = ForwardResidual()
    with torch.no_grad():
        model.fc.weight[:, 5] = 0  # channel 5 of the sum is read by nobody downstream
        model.conv1.weight[:, 5] = 0  # and the block's conv1 does not read the stem's channel 5
        model.fc.weight[:, 2] = 0  # channel 2 of the sum: unread, but conv1 still reads the stem's channel 2
    graph = relief_prune(model, torch.rand(8, 3, 8, 8), ReliefConfig(1.0, 1.0, dead_units=False,
                                                                      residual_rule=False))
    assert current_mask(model.conv2)[5].sum() == 0 and current_mask(model.stem)[5].sum() == 0
    assert current_mask(model.conv2)[2].sum() == 0 and current_mask(model.stem)[2].sum() > 0
    assert current_mask(model.conv2)[4].sum() > 0
    check_consistent(model, graph)


def test_residual_rule_cuts_projection_shortcut_filters():
    torch.manual_seed(0)
    model = resnet18().eval()
    block = model.layer2[0]
    with torch.no_grad():
        block.bn2.weight[3], block.bn2.bias[3] = 1e-6, 0.0  # residual branch negligible at channel 3
        block.downsample[1].weight[9], block.downsample[1].bias[9] = 1e-6, 0.0  # projection negligible at 9
    relief_prune(model, torch.rand(8, 3, 16, 16), ReliefConfig(0.95, 0.99))
    assert current_mask(block.conv2)[3].sum() == 0 and current_mask(block.bn2, "bias")[3] == 0
    assert current_mask(block.downsample[0])[9].sum() == 0
    assert current_mask(block.downsample[1], "weight")[9] == 0
    assert current_mask(block.conv2)[9].sum() > 0


def test_depthwise_filter_reads_only_its_channel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.ReLU(), nn.Conv2d(8, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))
    with torch.no_grad():
        model[4].weight[:, 2] = 0  # the pointwise conv does not read depthwise channel 2
        model[0].bias.fill_(1.0)  # every stem and depthwise channel fires
        model[2].bias.fill_(1.0)
    graph = relief_prune(model, torch.rand(8, 3, 6, 6), ReliefConfig(1.0, 1.0, dead_units=False))
    assert current_mask(model[2])[2].sum() == 0 and current_mask(model[0])[2].sum() == 0
    assert current_mask(model[0])[3].sum() > 0
    assert current_mask(model[2]).shape == (8, 1, 3, 3)
    check_consistent(model, graph)


def test_grouped_conv_scores_only_its_group():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 2))
    relief_prune(model, torch.rand(8, 4, 6, 6), ReliefConfig(0.7, 0.9))
    mask = current_mask(model[0])
    assert mask.shape == (6, 2, 3, 3) and 0 < mask.sum() < mask.numel()


def test_shared_relu_and_new_activations_are_supported():
    torch.manual_seed(0)
    prune_and_check(ForwardResidual(), (3, 8, 8))
    prune_and_check(GeluMLP(), (1, 28, 28))


def test_linear_on_sequences_scores_over_batch_and_positions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3))
    x = torch.rand(4, 5, 6)
    graph = relief_prune(model, x, ReliefConfig(0.9, 0.9))
    assert graph.layer("0").out_shape == (5, 8)
    check_consistent(model, graph)


class MinusItsFlip(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h - h.flip(1))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def test_unsupported_op_is_refused_before_any_mask_changes():
    model = MinusItsFlip()
    with pytest.raises(UnsupportedModuleError, match=r"op (flip|sub) .*ignore="):
        relief_prune(model, torch.rand(4, 4))
    assert not any(hasattr(m, "weight_mask") for m in model.modules())


def test_untraceable_model_gets_a_clear_error():
    with pytest.raises(UnsupportedModuleError, match="torch.fx cannot trace"):
        relief_prune(DataDependent(), torch.rand(4, 4))


def test_vit_hand_written_attention_heads_are_kept_whole_and_ignore_names_are_checked():
    """The head split (``qkv(x).reshape(b, t, 3, heads, d // heads)``) cannot be followed unit by unit: the units
    reaching it are kept, the pass says so with the line, and the MLPs around it are pruned."""
    torch.manual_seed(0)
    model = ViT()
    graph = prune_and_check(model, (1, 28, 28))
    whole = {k: v for k, v in graph.kept_whole.items() if k.startswith("blocks.0.attn: reshape")}
    assert len(whole) == 1 and "attention heads" in next(iter(whole.values()))
    assert "nets.py:" in next(iter(whole.values()))
    qkv = graph.layer("blocks.0.attn.qkv")
    assert int(alive_units(qkv).sum()) == qkv.out_units  # its outputs are read whole: no unit removed
    assert (current_mask(model.blocks[0].attn.qkv) == 0).any()  # its connections are still pruned
    with pytest.raises(KeyError, match="not a module"):
        relief_prune(model, torch.rand(2, 1, 28, 28), ignore=["blocks.9"])


def test_vit_mlp_and_patch_embedding_are_pruned():
    torch.manual_seed(0)
    model = ViT()
    graph = prune_and_check(model, (1, 28, 28), ignore=vit_attention_paths(model))
    names = [layer.name for layer in graph.layers()]
    assert "patch_embed" in names and "blocks.0.mlp.fc1" in names and "blocks.0.attn.qkv" not in names
    assert (current_mask(model.blocks[0].mlp.fc1) == 0).any()
    assert hasattr(model.patch_embed, "weight_mask")  # scored and selected (1 kernel + bias per filter)


@pytest.mark.parametrize("case", ["mobilenetv2", "resnet18", "gelu-mlp", "sequence"])
def test_dense_flops_and_parameters_of_new_layer_types(case):
    from relief_nb.pruning.metrics import count_parameters, dense_flops_torch, layer_table

    torch.manual_seed(0)
    if case == "sequence":
        model, shape = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3)), (5, 6)
    else:
        build, shape, _ = CASES[case]
        model = build()
    graph = prune_and_check(model, shape, passes=1)
    assert layer_table(model, graph).flops_dense.sum() == dense_flops_torch(model, shape)
    total, left = count_parameters(model, graph, "paper")
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert total == sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0) for m in layers)
    assert left < total


def test_ignored_layers_count_dense_in_parameters():
    from relief_nb.pruning.metrics import count_parameters

    torch.manual_seed(0)
    model = ViT()
    graph = prune_and_check(model, (1, 28, 28), passes=1, ignore=vit_attention_paths(model))
    total, left = count_parameters(model, graph, "paper")
    manual = sum(m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert total == manual and left < total


@pytest.mark.parametrize("aggregation", ["sample_l2", "mean_l2", "mean_l1"])
def test_depthwise_scores_equal_the_dense_equivalent(aggregation):
    from relief_nb.core.scores import ConvScoreAccumulator, DepthwiseScoreAccumulator
    from relief_nb.pruning.statistics import _dense_weight

    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=4)  # channel multiplier 2
    x = torch.randn(6, 4, 7, 7)
    dw, dense = DepthwiseScoreAccumulator(conv, aggregation), ConvScoreAccumulator(conv, aggregation)
    w = conv.weight.detach()
    dw.update(x, w)
    dense.update(x, _dense_weight(w, 4))
    full = dense.scores(_dense_weight(w, 4), conv.bias.detach())
    own = full[torch.arange(8), torch.arange(8) // 2]
    got = dw.scores(w, conv.bias.detach())
    torch.testing.assert_close(got[:, 0], own, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[:, 1], full[:, -1])


@pytest.mark.parametrize("case", list(CASES))
def test_alpha_one_leaves_the_function_on_the_scoring_batch_unchanged(case):
    """At alpha = 1 only silent connections, dead units and units nobody reads go, so the outputs on the
    scoring batch do not change: a check of the dead-unit rule and backward pruning across every merge."""
    build, shape, ignore = CASES[case]
    torch.manual_seed(0)
    model = build().eval()
    paths = vit_attention_paths(model) if ignore == "attn" else ()
    x = torch.rand(16, *shape)
    with torch.no_grad():
        before = model(x)
        relief_prune(model, x, ReliefConfig(1.0, 1.0), ignore=paths)
        after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
