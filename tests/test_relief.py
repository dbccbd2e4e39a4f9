"""The pruning pass: every architecture, dead units, backward pruning, residual rule, masks, bad input."""

import copy
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from nets import MobileNetV2
from torch import nn

from relief_nb.core.masks import (
    current_mask,
    effective,
    is_pruned,
    load_pruned_state_dict,
    make_permanent,
    mask_snapshot,
    raw_weight,
)
from relief_nb.core.selection import select
from relief_nb.graph.structure import UnsupportedModuleError, trace_model
from relief_nb.models.zoo import create_model, input_shape_of, list_models
from relief_nb.pruning import relief as relief_module
from relief_nb.pruning.metrics import count_parameters, dense_flops_torch, layer_table
from relief_nb.pruning.relief import ReliefConfig, ReliefWarning, alive_units, relief_prune, score_layers


def batch_for(name, n=16):
    return torch.rand(n, *input_shape_of(name))


@pytest.mark.parametrize("name", list_models())
def test_one_pass_prunes_every_layer(name):
    classes = 200 if name.endswith("-64") else 10
    model = create_model(name, classes, seed=0)
    graph = relief_prune(model, batch_for(name, 8), ReliefConfig(0.9, 0.95))
    table = layer_table(model, graph)
    assert (table.weights_remaining < table.weights).all(), table[["layer", "weights", "weights_remaining"]]
    assert (table.weights_remaining > 0).all()


@pytest.mark.parametrize("config", [
    ReliefConfig(0.9, 0.95),
    ReliefConfig.authors_code("lenet", 0.9, 0.95),
    ReliefConfig.authors_code("vgg", 0.9, 0.95),
])
def test_masks_only_shrink_over_passes(config):
    model = create_model("lenet5", seed=1)
    x = batch_for("lenet5", 64)
    relief_prune(model, x, config)
    first = mask_snapshot(model)
    relief_prune(model, x, config)
    for key, mask in mask_snapshot(model).items():
        if key in first:
            assert (mask <= first[key]).all(), key


def test_alpha_one_prunes_exactly_the_silent_paths():
    """With alpha = 1 only connections carrying no signal go: those from silent inputs, and (backward
    pruning) those into units that nobody reads any more."""
    model = create_model("lenet300-100", seed=0)
    x = batch_for("lenet300-100", 64)
    x[:, 0, :3] = 0  # three always-black pixels
    with torch.no_grad():
        h1 = torch.relu(model[1](x.flatten(1)))
        h2 = torch.relu(model[3](h1))
    live_in, live1, live2 = x.flatten(1).abs().sum(0) > 0, h1.sum(0) > 0, h2.sum(0) > 0
    assert not live_in.all() and not live1.all()
    relief_prune(model, x, ReliefConfig(1.0, 1.0, dead_units=False))
    assert torch.equal(current_mask(model[1]).bool(), live1[:, None] & live_in[None, :])
    assert torch.equal(current_mask(model[1], "bias").bool(), live1)
    assert torch.equal(current_mask(model[3]).bool(), live2[:, None] & live1[None, :])
    assert torch.equal(current_mask(model[5]).bool(), live2[None, :].expand(10, -1))


def test_dead_unit_loses_its_incoming_connections():
    model = create_model("lenet300-100", seed=0)
    with torch.no_grad():
        model[1].bias[5] = -1e6  # neuron 5 of the first hidden layer never fires
    x = batch_for("lenet300-100", 32)
    with torch.no_grad():
        fires = torch.relu(model[1](x.flatten(1))).sum(0) > 0
    assert not fires[5]
    graph = relief_prune(model, x, ReliefConfig(1.0, 1.0, backward_pruning=False))
    first = graph.layers()[0].module
    assert current_mask(first)[5].sum() == 0 and current_mask(first, "bias")[5] == 0
    assert torch.equal(alive_units(graph.layers()[0]), fires)


def test_backward_pruning_linear_to_linear():
    model = create_model("lenet300-100", seed=0)
    with torch.no_grad():
        model[3].weight[:, 7] = 0  # nobody reads neuron 7 of the first hidden layer
    graph = relief_prune(model, batch_for("lenet300-100", 32), ReliefConfig(1.0, 1.0, dead_units=False))
    assert current_mask(model[1])[7].sum() == 0 and current_mask(model[1], "bias")[7] == 0
    assert not alive_units(graph.layers()[0])[7]


def test_backward_pruning_across_flatten_and_conv_to_conv():
    model = create_model("lenet5", seed=0)
    with torch.no_grad():
        model[7].weight[:, 3 * 16:4 * 16] = 0  # channel 3 of conv2 (50 x 4 x 4 flattened) is never read
        model[3].weight[:, 11] = 0  # filter 11 of conv1 is never read by conv2
    relief_prune(model, batch_for("lenet5", 32), ReliefConfig(1.0, 1.0, dead_units=False))
    assert current_mask(model[3])[3].sum() == 0 and current_mask(model[3], "bias")[3] == 0
    assert current_mask(model[0])[11].sum() == 0 and current_mask(model[0], "bias")[11] == 0


def test_backward_pruning_through_residual_blocks():
    model = create_model("resnet20", seed=0)
    blocks = model.layers
    with torch.no_grad():
        # block 2 (16 -> 16) stops reading channel 4: conv1 and shortcut
        blocks[2].conv1.weight[:, 4] = 0
        blocks[2].shortcut_mask[4] = 0
        # block 3 (16 -> 32, option-A pad 8) stops reading its input channel 2 (shortcut lands on channel 10)
        blocks[3].conv1.weight[:, 2] = 0
        blocks[3].shortcut_mask[10] = 0
    cfg = ReliefConfig(1.0, 1.0, dead_units=False, residual_rule=False)
    relief_prune(model, batch_for("resnet20", 16), cfg)
    for producer, channel in ((blocks[1], 4), (blocks[2], 2)):
        assert current_mask(producer.conv2)[channel].sum() == 0
        assert producer.shortcut_mask[channel] == 0
        assert current_mask(producer.bn2, "weight")[channel] == 0
        assert current_mask(producer.bn2, "bias")[channel] == 0
    # block 1 still reads channels 4 and 2 through its own conv1, so block 0 keeps them
    assert current_mask(blocks[0].conv2)[4].sum() > 0 and blocks[0].shortcut_mask[4] == 1


def test_stem_is_pruned_when_no_block_reads_a_channel():
    model = create_model("resnet20", seed=0)
    with torch.no_grad():
        model.layers[0].conv1.weight[:, 6] = 0
        model.layers[0].shortcut_mask[6] = 0
    graph = relief_prune(model, batch_for("resnet20", 16), ReliefConfig(1.0, 1.0, residual_rule=False))
    assert current_mask(model.stem[0])[6].sum() == 0
    assert current_mask(model.stem[1], "weight")[6] == 0
    assert graph.layers()[0].name == "stem.0"


def test_residual_rule_removes_dominated_filters_and_shortcuts():
    model = create_model("resnet20", seed=0)
    block = model.layers[1]
    with torch.no_grad():
        block.bn2.weight[3], block.bn2.bias[3] = 1e-6, 0.0  # residual branch k=3 negligible vs shortcut
        block.bn2.weight[9], block.bn2.bias[9] = 1e3, 1e3  # residual branch k=9 dwarfs the shortcut
    relief_prune(model, batch_for("resnet20", 16), ReliefConfig(0.95, 0.99))
    assert current_mask(block.conv2)[3].sum() == 0 and current_mask(block.bn2, "bias")[3] == 0
    assert block.shortcut_mask[9] == 0 and current_mask(block.conv2)[9].sum() > 0


def test_pruned_state_dict_loads_into_fresh_model_and_can_be_made_permanent():
    model = create_model("vgg11", seed=0)
    x = batch_for("vgg11", 8)
    relief_prune(model, x)
    model.eval()
    expected = model(x)
    fresh = create_model("vgg11", seed=1)
    load_pruned_state_dict(fresh, model.state_dict())
    fresh.eval()
    torch.testing.assert_close(fresh(x), expected)
    make_permanent(fresh)
    assert not any(k.endswith("_mask") and "shortcut" not in k for k in fresh.state_dict())
    torch.testing.assert_close(fresh(x), expected)


def test_removed_batchnorm_channels_stay_zero_through_training():
    model = create_model("vgg11", seed=0)
    x = batch_for("vgg11", 16)
    graph = relief_prune(model, x, ReliefConfig(0.8, 0.9))
    removed = {layer.name: ~alive_units(layer) for layer in graph.layers() if layer.bn is not None}
    assert any(r.any() for r in removed.values())
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), torch.randint(0, 10, (16,))).backward()
        opt.step()
    for layer in graph.layers():
        if layer.bn is not None:
            r = removed[layer.name]
            assert (layer.bn.weight[r] == 0).all() and (layer.bn.bias[r] == 0).all()


SPEC_COUNTS = {
    "lenet300-100": 266_610, "lenet5": 431_080, "vgg-like": 14_982_474, "vgg16": 15_245_130,
    "vgg19": 20_554_826, "resnet20": 268_346, "resnet56": 848_954,
}
SPEC_ALL = {"resnet20": 269_722, "vgg-like": 14_990_922}


@pytest.mark.parametrize("name", list_models())
def test_parameter_counts(name):
    classes = 200 if name.endswith("-64") else 10
    model = create_model(name, classes)
    graph = trace_model(model, input_shape_of(name))
    total, left = count_parameters(model, graph, "paper")
    assert total == left
    manual = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
                 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert total == manual
    if name in SPEC_COUNTS:
        assert total == SPEC_COUNTS[name]
    total_all, _ = count_parameters(model, graph, "all")
    assert total_all == sum(p.numel() for p in model.parameters())
    if name in SPEC_ALL:
        assert total_all == SPEC_ALL[name]


@pytest.mark.parametrize("name", ["lenet5", "vgg11", "resnet20"])
def test_dense_flops_agree_with_torch_flop_counter(name):
    model = create_model(name)
    graph = trace_model(model, input_shape_of(name))
    assert layer_table(model, graph).flops_dense.sum() == dense_flops_torch(model, input_shape_of(name))


def test_sparse_flops_count_surviving_kernels():
    model = create_model("lenet5", seed=0)
    graph = relief_prune(model, batch_for("lenet5", 32))
    row = layer_table(model, graph).iloc[0]  # conv1: 24 x 24 outputs
    assert row.flops_sparse == 2 * 24 * 24 * row.weights_remaining


# --- bad input -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [dict(alpha_conv=0.0), dict(alpha_fc=1.5), dict(alpha_conv=-1)])
def test_config_refuses_alpha_outside_range(kwargs):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        ReliefConfig(**kwargs)


def test_config_refuses_unknown_options():
    with pytest.raises(ValueError, match="sample_l2"):
        ReliefConfig(conv_aggregation="max")
    with pytest.raises(ValueError, match="paper"):
        ReliefConfig(selection="greedy")


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="empty|non-empty"):
        relief_prune(create_model("lenet5"), torch.zeros(0, 1, 28, 28))


def test_batch_of_wrong_shape_is_refused():
    model = create_model("lenet5")
    with pytest.raises(ValueError, match="does not fit"):
        relief_prune(model, torch.zeros(4, 3, 32, 32))
    graph = trace_model(model, (1, 28, 28))
    with pytest.raises(ValueError, match=r"expects \(N, 1, 28, 28\)"):
        relief_prune(model, torch.zeros(4, 1, 32, 32), graph=graph)


def test_nan_in_weights_or_batch_is_refused_and_nothing_is_applied():
    model = create_model("lenet5", seed=0)
    with torch.no_grad():
        model[7].weight[0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(FloatingPointError, match=r"weight of layer fc1"):
        relief_prune(model, batch_for("lenet5"))
    assert before.keys() == model.state_dict().keys()
    bad = batch_for("lenet5")
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        relief_prune(create_model("lenet5"), bad)


def test_nan_in_activations_is_refused():
    model = create_model("lenet5", seed=0)
    with torch.no_grad():
        model[3].weight.mul_(1e38)  # overflows to inf inside the network
    with pytest.raises(FloatingPointError, match="activations entering layer|output"):
        relief_prune(model, batch_for("lenet5"))


def test_failure_midway_leaves_masks_untouched(monkeypatch):
    model = create_model("resnet20", seed=0)
    x = batch_for("resnet20")
    relief_prune(model, x)
    before = mask_snapshot(model)

    def boom(graph):
        raise RuntimeError("injected failure after conv masks were committed")

    monkeypatch.setattr(relief_module, "_backward_sweep", boom)
    with pytest.raises(RuntimeError, match="injected"):
        relief_prune(model, x)
    after = mask_snapshot(model)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    for name, module in model.named_modules():  # visible weights follow the restored masks
        if is_pruned(module):
            assert torch.equal(module.weight, effective(module)), name


def test_fresh_model_failure_leaves_it_unpruned(monkeypatch):
    model = create_model("lenet5", seed=0)
    monkeypatch.setattr(relief_module, "_backward_sweep", lambda g: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        relief_prune(model, batch_for("lenet5"))
    assert all((current_mask(m) == 1).all() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


class WithSoftmaxHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
        self.head = nn.Sequential(nn.Softmax(dim=1))

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize("model, path", [
    (nn.Sequential(nn.Conv2d(4, 4, 3), nn.PixelShuffle(2), nn.Conv2d(1, 2, 1)), r"module 1 \(PixelShuffle\)"),
    (nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Softmax(dim=1), nn.Linear(4, 2)), r"module 2 \(Softmax\)"),
    (WithSoftmaxHead(), r"module head.0 \(Softmax\)"),
])
def test_unsupported_module_is_named(model, path):
    shape = (4, 3, 3) if isinstance(model[0] if isinstance(model, nn.Sequential) else None, nn.Conv2d) else (4,)
    with pytest.raises(UnsupportedModuleError, match=path):
        relief_prune(model, torch.rand(2, *shape))


def test_all_finite_falls_back_to_elements_when_the_sum_overflows():
    from relief_nb.pruning.relief import all_finite

    big = torch.full((4,), 3e38)  # finite entries whose float32 sum is inf
    assert all_finite(big)
    assert not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([1.0, float("-inf")]))


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_scores_do_not_depend_on_memory_format(name):
    """Experiments train channels-last; the scores (and so the masks) are those of the usual layout."""
    model = create_model(name, seed=0).double().eval()
    x = batch_for(name, 8).double()
    dense = score_layers(model, x)
    last = score_layers(model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last))
    for layer, s in dense.items():
        torch.testing.assert_close(last[layer], s, rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:this pass removed:relief_nb.pruning.relief.ReliefWarning")  # alphas 0.7 / 0.8
@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_masks_do_not_depend_on_memory_format(name):
    """The whole pass (scores, dead units, residual-dominance maps, backward pruning) on a channels-last copy."""
    model = create_model(name, seed=0).double().eval()
    x = batch_for(name, 8).double()
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    relief_prune(model, x, ReliefConfig(0.7, 0.8))
    relief_prune(last, x.contiguous(memory_format=torch.channels_last), ReliefConfig(0.7, 0.8))
    masks = {k: v for k, v in model.state_dict().items() if k.endswith("_mask")}
    assert masks and (name != "resnet20" or any(k.endswith("shortcut_mask") for k in masks))
    assert any(not bool(m.all()) for m in masks.values())  # something was pruned
    for key, mask in masks.items():
        assert torch.equal(last.state_dict()[key], mask), key


def test_pruned_models_keep_running_channels_last():
    """Experiments train channels-last; masks and prepare() must not push any conv back to the NCHW layout."""
    from relief_nb.data.datasets import prepare, synthetic_dataset
    from relief_nb.pruning.baselines import prune_baseline

    ds = synthetic_dataset("mnist", n_train=8, n_test=2)
    x = prepare(ds.train_x, ds, "cpu")
    model = create_model("lenet5", seed=0).to(memory_format=torch.channels_last)
    graph = relief_prune(model, x)
    prune_baseline(graph, "magnitude_layer", 0.9)
    outputs = []
    hooks = [layer.module.register_forward_hook(lambda m, a, out: outputs.append(out)) for layer in graph.layers()
             if layer.kind == "conv"]
    model(x)
    for h in hooks:
        h.remove()
    assert len(outputs) == 2
    assert all(out.stride(1) == 1 for out in outputs)  # channels are the innermost dimension


def test_masked_weight_keeps_the_parameter_strides():
    """LeNet-5's conv1 weight (20, 1, 5, 5) channels-last: orig * mask alone looks NCHW (size-1 dim), which sent the
    conv and every layer after it off channels-last (pruned forward 1.6x slower)."""
    model = create_model("lenet5", seed=0).to(memory_format=torch.channels_last)
    x = torch.rand(8, 1, 28, 28).contiguous(memory_format=torch.channels_last)  # 1 channel: strides ambiguous
    relief_prune(model, x)
    conv1 = model.conv1
    assert conv1.weight.stride() == raw_weight(conv1).stride()
    model(x)  # prune's pre-hook recomputes the weight
    assert conv1.weight.stride() == raw_weight(conv1).stride()
    assert conv1(x).stride(1) == 1  # channels innermost
    fresh = create_model("lenet5").to(memory_format=torch.channels_last)
    load_pruned_state_dict(fresh, model.state_dict())
    fresh(x)
    assert fresh.conv1.weight.stride() == raw_weight(fresh.conv1).stride()
    torch.testing.assert_close(fresh(x), model(x))


def test_batchnorm_of_dead_filters_is_masked_before_the_classifier_is_scored():
    """Filter 0 is silent on the batch (conv >= 5, BN(z) = 1 - z < 0) but BN(0) = 1 > 0: once the dead-unit
    rule removes it, the classifier must be scored with channel 0 silent, so nothing keeps reading it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].weight[0], model[0].bias[0] = 1.0, 5.0
        model[1].weight[0], model[1].bias[0] = -1.0, 1.0
    model.eval()
    x = torch.rand(16, 3, 4, 4)
    with torch.no_grad():
        post = model[2](model[1](model[0](x)))
        assert post[:, 0].abs().max() == 0 and (post[:, 1:].flatten(1).abs().max(1).values > 0).all()
        assert model[2](model[1](torch.zeros(1, 4, 1, 1)))[0, 0] > 0  # relu(BN(0)) of filter 0
    relief_prune(model, x, ReliefConfig(1.0, 1.0, backward_pruning=False))
    assert current_mask(model[0])[0].sum() == 0 and current_mask(model[1], "bias")[0] == 0
    assert current_mask(model[4])[:, :16].sum() == 0  # channel 0's 16 features are read by nobody
    assert current_mask(model[4])[:, 16:].sum() > 0


# ---------------------------------------------------------------------------------------------- score_layers
def grouped_net() -> nn.Sequential:
    """A dense conv, a grouped conv (2 groups), a depthwise conv with stride, a Linear head."""
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1, groups=2),
                         nn.ReLU(), nn.Conv2d(12, 12, 3, stride=2, padding=1, groups=12), nn.ReLU(), nn.Flatten(),
                         nn.Linear(12 * 4 * 4, 5))


SCORED_NETS = {"mobilenetv2 (depthwise)": (MobileNetV2, (3, 16, 16)), "grouped": (grouped_net, (4, 8, 8))}


def loop_kernel_scores(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """The paper's conv scores (sample_l2), one small convolution per kernel: ``(out, in / groups [+1 bias])``,
    filter j reading the input channels of its group."""
    x, w = x.double().abs(), conv.weight.detach().double().abs()
    out, per_group = w.shape[:2]
    s = torch.zeros(out, per_group, dtype=torch.float64)
    for j in range(out):
        for c in range(per_group):
            channel = j // (out // conv.groups) * per_group + c
            maps = F.conv2d(x[:, channel:channel + 1], w[j, c][None, None], stride=conv.stride,
                            padding=conv.padding, dilation=conv.dilation)
            s[j, c] = maps.flatten(1).norm(dim=1).mean()
    if conv.bias is not None:
        s = torch.cat([s, conv.bias.detach().double().abs()[:, None] * maps[0].numel() ** 0.5], dim=1)
    return s


@pytest.mark.parametrize("net", list(SCORED_NETS))
def test_score_layers_on_grouped_and_depthwise_convs(net):
    build, shape = SCORED_NETS[net]
    torch.manual_seed(0)
    model = build().double().eval()
    x = torch.rand(6, *shape, dtype=torch.float64)
    inputs: dict[str, torch.Tensor] = {}
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: inputs.__setitem__(name, args[0]))
             for name, m in convs.items()]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    scores = score_layers(model, x)
    assert scores.keys() == {layer.name for layer in trace_model(model, shape).layers()}
    assert any(m.groups > 1 and m.groups < m.in_channels for m in convs.values()) or net != "grouped"
    assert any(m.groups == m.in_channels > 1 for m in convs.values())
    for name, conv in convs.items():
        assert scores[name].shape == (conv.out_channels, conv.in_channels // conv.groups + (conv.bias is not None))
        if conv.groups > 1 or net == "grouped":  # the dense convs of MobileNetV2 are left to tests/test_scores.py
            torch.testing.assert_close(scores[name], loop_kernel_scores(inputs[name], conv), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("net", list(SCORED_NETS))
def test_the_pass_keeps_the_alpha_rule_selection_of_score_layers(net):
    """Without the dead-unit, residual and backward rules a conv's kept kernels are exactly the alpha rule on
    its score_layers scores: the pass and score_layers share one collector."""
    build, shape = SCORED_NETS[net]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.rand(16, *shape)
    config = ReliefConfig(0.8, 0.9, dead_units=False, residual_rule=False, backward_pruning=False)
    scores = score_layers(model, x, config)
    graph = relief_prune(model, x, config)
    for layer in graph.layers():
        if layer.kind != "conv":
            continue
        keep = select(scores[layer.name], config.alpha_conv)
        kept = current_mask(layer.module) != 0
        n_in = kept.shape[1]
        assert torch.equal(kept, keep[:, :n_in, None, None].expand_as(kept)), layer.name
        if layer.module.bias is not None:
            assert torch.equal(current_mask(layer.module, "bias") != 0, keep[:, n_in]), layer.name


def test_a_linear_layer_keeps_the_alpha_rule_selection_of_score_layers():
    """The full pass (dead units, backward pruning) on LeNet-300-100: the output layer keeps exactly the alpha rule
    selection of its scores."""
    model = create_model("lenet300-100", seed=0)
    x = batch_for("lenet300-100", 64)
    config = ReliefConfig(0.9, 0.9)
    scores = score_layers(model, x, config)
    graph = relief_prune(model, x, config)
    last = graph.layers()[-1]
    keep = select(scores[last.name], config.alpha_fc)
    assert torch.equal(current_mask(last.module) != 0, keep[:, :-1])
    assert torch.equal(current_mask(last.module, "bias") != 0, keep[:, -1])
    assert not keep.all()


# ---------------------------------------------------------------------------------------------- warnings
def remaining_weights(graph) -> int:
    return sum(int((current_mask(layer.module) != 0).sum()) for layer in graph.layers())


@pytest.mark.parametrize("make, what", [
    (lambda: torch.zeros(8, 1, 28, 28), "all zeros"),
    (lambda: torch.full((8, 1, 28, 28), 0.5), r"constant \(all 8 samples identical\)"),
    (lambda: torch.rand(1, 1, 28, 28).expand(8, -1, -1, -1), r"constant \(all 8 samples identical\)"),
    (lambda: torch.full((1, 1, 28, 28), 0.3), "a single constant sample"),
])
def test_a_constant_scoring_batch_warns(make, what):
    batch = make()
    message = rf"the scoring batch is {what}: importance scores measured on it are meaningless.*real training images"
    for run in (lambda: relief_prune(create_model("lenet300-100", seed=0), batch),
                lambda: score_layers(create_model("lenet5", seed=0), batch)):
        with warnings.catch_warnings(record=True) as record:  # an all-zero batch also prunes almost everything
            warnings.simplefilter("always")
            run()
        constant = [w for w in record if re.match(message, str(w.message))]
        assert len(constant) == 1 and constant[0].category is ReliefWarning, [str(w.message) for w in record]
        assert constant[0].filename == __file__  # attributed to the caller, not to relief_nb


def test_a_pass_removing_most_remaining_weights_warns():
    model = create_model("lenet300-100", seed=0)
    x = batch_for("lenet300-100", 64)
    relief_prune(model, x)
    graph = trace_model(model, (1, 28, 28))
    before = remaining_weights(graph)
    with pytest.warns(ReliefWarning, match=rf"removed 9\d\.\d% of the {before:,} weights that remained before it"
                                           r".*higher alpha") as record:
        relief_prune(model, x, ReliefConfig(0.3, 0.3), graph=graph)
    removed = 1 - remaining_weights(graph) / before
    assert removed > 0.9 and f"{removed:.1%}" in str(record[0].message)


@pytest.mark.parametrize("name", ["lenet5", "lenet300-100"])
def test_a_normal_pass_emits_no_relief_warning(name):
    model = create_model(name, seed=0)
    x = batch_for(name, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReliefWarning)
        for _ in range(2):
            relief_prune(model, x)
        score_layers(model, x[:1])  # a single real image is not constant


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.float64])
def test_a_batch_of_another_dtype_is_refused_with_the_fix(dtype):
    model = create_model("lenet300-100", seed=0)
    batch = (torch.rand(16, 1, 28, 28) * 255).to(dtype)
    with pytest.raises(TypeError, match=rf"scoring batch is {dtype} but the model's weights are torch.float32"):
        relief_prune(model, batch)
    assert not any(name.endswith("_mask") for name, _ in model.named_buffers())  # nothing was pruned
