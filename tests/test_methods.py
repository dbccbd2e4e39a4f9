"""The pruning-method interface: every registered method shrinks masks to its budget; SNIP and MagAct keep the
weights of largest |w * dL/dw| and |w| * mean|a| (checked against direct computations); bad inputs are refused
before any mask changes; magnitude and random give the masks the old ``prune_to_counts`` gave."""

import hashlib
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relief_nb.core.masks import current_mask
from relief_nb.graph.structure import trace_model
from relief_nb.models.zoo import create_model, input_shape_of
from relief_nb.pruning import methods as methods
from relief_nb.pruning.baselines import prune_to_counts
from relief_nb.pruning.methods import (
    Budget,
    MagnitudeMethod,
    PruningMethod,
    ReliefMethod,
    get_method,
    list_methods,
    register_method,
)
from relief_nb.pruning.relief import ReliefConfig, relief_prune

ALL = ("relief", "magnitude_global", "magnitude_layer", "random", "snip", "magact")
PER_LAYER = ("magnitude_layer", "random", "snip", "magact")


def setup(name, n=16, seed=0):
    model = create_model(name, seed=0)
    graph = trace_model(model, input_shape_of(name))
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *input_shape_of(name), generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    return model, graph, x, y


def masks(graph):
    return {layer.name: (current_mask(layer.module) != 0).clone() for layer in graph.layers()}


def kept(graph):
    return {name: int(m.sum()) for name, m in masks(graph).items()}


def fraction(graph, frac):
    """A per-layer budget keeping ``frac`` of what each layer has left."""
    return Budget(per_layer={name: round(frac * n) for name, n in kept(graph).items()})


def prune(name, graph, x, y, budget, seed=0):
    method = get_method(name)
    method.prune(graph, x, y, budget if method.needs_budget else None, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model_name", ["lenet300-100", "lenet5"])
@pytest.mark.parametrize("name", ALL)
def test_every_method_shrinks_masks_to_its_budget(model_name, name):
    model, graph, x, y = setup(model_name)
    for frac in (0.6, 0.5):  # twice: the second step starts from masks already installed
        before = masks(graph)
        budget = fraction(graph, frac)
        prune(name, graph, x, y, budget)
        after = masks(graph)
        for layer, mask in after.items():
            assert not (mask & ~before[layer]).any(), f"{name}: a removed weight of {layer} came back"
        if name in PER_LAYER:
            assert kept(graph) == dict(budget.per_layer)
        elif name == "magnitude_global":
            assert sum(kept(graph).values()) == budget.total
        else:  # NNrelief decides its own budget
            assert sum(kept(graph).values()) < sum(m.numel() for m in before.values())


def test_global_magnitude_takes_only_the_total_of_a_per_layer_budget():
    """Its layers drift from NNrelief's: a reference layer may keep more than the global baseline has left there."""
    _, graph, *_ = setup("lenet300-100")
    get_method("magnitude_layer").prune(graph, None, None, Budget(per_layer={"fc3": 100}))
    budget = Budget(per_layer={"fc1": 1000, "fc2": 1000, "fc3": 500})  # fc3 has 100 left; 2500 in total is fine
    get_method("magnitude_global").prune(graph, None, None, budget)
    assert sum(kept(graph).values()) == 2500


def test_global_magnitude_keeps_the_largest_over_all_layers_and_takes_an_overall_budget():
    model, graph, *_ = setup("lenet5")
    get_method("magnitude_global").prune(graph, None, None, Budget(overall=10_000))
    assert sum(kept(graph).values()) == 10_000
    weights = [layer.module.weight_orig.abs() for layer in graph.layers()]
    alive = list(masks(graph).values())
    assert min(w[m].min() for w, m in zip(weights, alive)) >= max(w[~m].max() for w, m in zip(weights, alive))


# ------------------------------------------------------------------------ SNIP and MagAct, direct computations
def tiny_mlp():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    graph = trace_model(model, (6,))
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(12, 6, generator=gen), torch.randint(0, 3, (12,), generator=gen)
    get_method("random").prune(graph, None, None, Budget(per_layer={"0": 40, "3": 20}), gen)  # some already gone
    return model, graph, x, y


def top_mask(saliency, alive, k):
    """The ``k`` largest saliencies among ``alive`` weights, by sorting (independent of the package's topk)."""
    scores = torch.where(alive, saliency, torch.full_like(saliency, -1.0)).flatten()
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[scores.argsort(descending=True)[:k]] = True
    return keep.view(saliency.shape)


def test_snip_keeps_the_largest_weight_times_gradient_and_restores_the_model():
    model, graph, x, y = tiny_mlp()
    model.train()
    before = masks(graph)
    w0 = (model[0].weight_orig * model[0].weight_mask).detach().requires_grad_()
    w3 = (model[3].weight_orig * model[3].weight_mask).detach().requires_grad_()
    hidden = F.relu(F.linear(x, w0, model[0].bias))  # eval mode: no dropout
    F.cross_entropy(F.linear(hidden, w3, model[3].bias), y).backward()
    expected = {"0": top_mask((w0 * w0.grad).abs(), before["0"], 25),
                "3": top_mask((w3 * w3.grad).abs(), before["3"], 12)}
    get_method("snip").prune(graph, x, y, Budget(per_layer={"0": 25, "3": 12}))
    got = masks(graph)
    assert torch.equal(got["0"], expected["0"]) and torch.equal(got["3"], expected["3"])
    assert all(m.training for m in model.modules())  # train mode restored
    assert model[0].weight_orig.grad is None and model[0].weight_orig.requires_grad  # .grad untouched


def test_magact_keeps_the_largest_weight_times_mean_activation_on_linear_layers():
    model, graph, x, _ = tiny_mlp()
    model.train()
    before = masks(graph)
    with torch.no_grad():
        a0 = x.abs().mean(0)
        a3 = F.relu(model[0](x)).abs().mean(0)  # eval mode: the dropout passes everything
    expected = {"0": top_mask(model[0].weight_orig.abs() * a0, before["0"], 30),
                "3": top_mask(model[3].weight_orig.abs() * a3, before["3"], 7)}
    get_method("magact").prune(graph, x, None, Budget(per_layer={"0": 30, "3": 7}))
    got = masks(graph)
    assert torch.equal(got["0"], expected["0"]) and torch.equal(got["3"], expected["3"])
    assert all(m.training for m in model.modules())


def test_magact_maps_grouped_and_depthwise_conv_weights_to_their_input_channels():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1, groups=6))
    graph = trace_model(model, (4, 7, 7))
    x = torch.randn(5, 4, 7, 7, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        acts = {"0": x.abs().mean(dim=(0, 2, 3)), "2": F.relu(model[0](x)).abs().mean(dim=(0, 2, 3))}
    expected = {}
    for name, keep in (("0", 50), ("2", 20)):
        conv = getattr(model, name)
        w = conv.weight.detach()
        saliency = torch.empty_like(w)
        out_per_group, in_per_group = conv.out_channels // conv.groups, w.shape[1]
        for o in range(w.shape[0]):  # the formula, written out weight by weight
            for i in range(in_per_group):
                saliency[o, i] = w[o, i].abs() * acts[name][(o // out_per_group) * in_per_group + i]
        expected[name] = top_mask(saliency, torch.ones_like(w, dtype=torch.bool), keep)
    get_method("magact").prune(graph, x, None, Budget(per_layer={"0": 50, "2": 20}))
    got = masks(graph)
    assert torch.equal(got["0"], expected["0"]) and torch.equal(got["2"], expected["2"])


@pytest.mark.parametrize("name", ["snip", "magact"])
def test_data_methods_work_on_channels_last_models(name):
    model, graph, x, y = setup("lenet5")
    model.to(memory_format=torch.channels_last)
    budget = fraction(graph, 0.5)
    prune(name, graph, x.to(memory_format=torch.channels_last), y, budget)
    prune(name, graph, x, y, fraction(graph, 0.5))
    assert kept(graph) == {n: round(0.5 * c) for n, c in budget.per_layer.items()}


# --------------------------------------------------------------------------------------- random, relief
def test_random_is_reproducible_with_a_seeded_generator():
    def run(seed):
        _, graph, *_ = setup("lenet5")
        get_method("random").prune(graph, None, None, fraction(graph, 0.3), torch.Generator().manual_seed(seed))
        return masks(graph)

    first, again, other = run(0), run(0), run(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("train", [True, False])
def test_relief_method_is_relief_prune_and_keeps_the_model_mode(train):
    config = ReliefConfig(0.8, 0.9)
    model, graph, x, _ = setup("lenet5", n=32)
    reference, ref_graph, *_ = setup("lenet5", n=32)
    model.train(train)
    relief_prune(reference, x, config, ref_graph)
    ReliefMethod(config).prune(graph, x)
    assert all(torch.equal(a, b) for a, b in zip(masks(graph).values(), masks(ref_graph).values()))
    assert all(m.training == train for m in model.modules())
    assert get_method("relief").config == ReliefConfig()


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name", PER_LAYER + ("magnitude_global",))
def test_budget_errors(name):
    _, graph, x, y = setup("lenet5")
    method = get_method(name)
    with pytest.raises(ValueError, match="needs a budget"):
        method.prune(graph, x, y, None)
    with pytest.raises(ValueError, match=r"not layers of the graph.*conv1"):
        method.prune(graph, x, y, Budget(per_layer={"fc9": 3}))
    with pytest.raises(TypeError, match="must be a Budget"):
        method.prune(graph, x, y, {"fc1": 3})
    get_method("random").prune(graph, None, None, Budget(per_layer={"fc1": 100}))
    before = masks(graph)
    with pytest.raises(ValueError, match="masks only shrink"):  # conv1 is valid, fc1 is not: nothing changes
        method.prune(graph, x, y, Budget(per_layer={"conv1": 10, "fc1": 101}) if name != "magnitude_global"
                     else Budget(overall=sum(kept(graph).values()) + 1))
    assert all(torch.equal(before[k], v) for k, v in masks(graph).items())
    if name != "magnitude_global":
        with pytest.raises(ValueError, match="per_layer"):
            method.prune(graph, x, y, Budget(overall=10))


def test_budget_refuses_negative_non_integer_and_ambiguous_counts():
    with pytest.raises(ValueError, match="negative"):
        Budget(per_layer={"fc1": -1})
    with pytest.raises(ValueError, match="negative"):
        Budget(overall=-5)
    with pytest.raises(TypeError, match="integer"):
        Budget(per_layer={"fc1": 2.5})
    with pytest.raises(TypeError, match="integer"):
        Budget(overall=True)
    with pytest.raises(ValueError, match="exactly one"):
        Budget()
    with pytest.raises(ValueError, match="exactly one"):
        Budget(per_layer={"fc1": 1}, overall=1)
    budget = Budget(per_layer={"a": np.int64(3), "b": 4})
    assert budget.total == 7 and Budget(overall=9).total == 9
    assert pickle.loads(pickle.dumps(budget)) == budget and hash(budget) == hash(Budget(per_layer={"a": 3, "b": 4}))
    with pytest.raises(TypeError):
        budget.per_layer["a"] = 1  # read-only


def test_budget_of_and_from_sparsity():
    _, graph, *_ = setup("lenet5")
    sizes = {layer.name: layer.module.weight.numel() for layer in graph.layers()}
    assert dict(Budget.of(graph).per_layer) == sizes
    assert dict(Budget.from_sparsity(graph, 0.5).per_layer) == {n: round(0.5 * s) for n, s in sizes.items()}
    assert Budget.from_sparsity(graph, 0.75, overall=True).overall == round(0.25 * sum(sizes.values()))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Budget.from_sparsity(graph, 1.0)
    get_method("magnitude_layer").prune(graph, None, None, Budget(per_layer={"fc1": 1000}))
    assert Budget.of(graph).per_layer["fc1"] == 1000


def test_relief_refuses_a_budget_and_data_methods_refuse_bad_batches():
    _, graph, x, y = setup("lenet5")
    with pytest.raises(ValueError, match="decides its own budget"):
        get_method("relief").prune(graph, x, None, Budget.of(graph))
    budget = Budget.of(graph)
    with pytest.raises(ValueError, match="needs the batch's labels"):
        get_method("snip").prune(graph, x, None, budget)
    with pytest.raises(ValueError, match="integer class indices"):
        get_method("snip").prune(graph, x, y.float(), budget)
    with pytest.raises(ValueError, match="integer class indices"):
        get_method("snip").prune(graph, x, y[:3], budget)
    with pytest.raises(ValueError, match=r"class indices in \[0, 10\)"):
        get_method("snip").prune(graph, x, y + 10, budget)
    for name in ("relief", "snip", "magact"):
        method = get_method(name)
        b = budget if method.needs_budget else None
        with pytest.raises(TypeError, match="inputs must be a torch.Tensor"):
            method.prune(graph, None, y, b)
        with pytest.raises(ValueError, match="model expects"):
            method.prune(graph, x[:, :, :20], y, b)
        with pytest.raises(ValueError, match="NaN"):
            method.prune(graph, x * float("nan"), y, b)
    with pytest.raises(TypeError, match="trace_model"):
        get_method("random").prune(create_model("lenet5"), None, None, budget)


# ------------------------------------------------------------------------------------------------- registry
def test_registry_lists_the_six_methods_and_names_them_when_refusing():
    assert list_methods() == ALL
    assert tuple(methods.METHODS) == ALL
    for name in ALL:
        method = get_method(name)
        assert isinstance(method, PruningMethod) and method.name == name and method.label
    assert (get_method("relief").needs_budget, get_method("snip").needs_targets) == (False, True)
    with pytest.raises(ValueError, match="unknown pruning method 'taylor'") as err:
        get_method("taylor")
    assert all(name in str(err.value) for name in ALL)


def test_register_method_adds_validates_and_refuses_duplicates():
    custom = MagnitudeMethod(per_layer=True, name="magnitude_copy", label="magnitude (copy)")
    try:
        assert register_method(custom) is custom
        assert get_method("magnitude_copy") is custom and "magnitude_copy" in methods.METHODS
        with pytest.raises(ValueError, match="already registered"):
            register_method(custom)
        assert register_method(custom, replace=True) is custom
    finally:
        methods._REGISTRY.pop("magnitude_copy", None)
    with pytest.raises(TypeError, match="label"):
        register_method(type("Half", (), {"name": "half", "prune": lambda *a: None})())
    assert list_methods() == ALL


# ----------------------------------------------------------------------------------- the old implementation
# sha256 (first 16 hex digits) of the packed masks that relief_nb.baselines.prune_to_counts gave at commit a0a56f6,
# before it moved into relief_nb.methods (torch 2.13 CPU): two steps, keeping 60 % then 30 % of each layer's
# weights (their total for the global method), random with one generator seeded 0.
OLD_DIGESTS = {
    ("lenet300-100", "magnitude_global"): "a3c845b3fb0a494d",
    ("lenet300-100", "magnitude_layer"): "149bd6f36c73edf7",
    ("lenet300-100", "random"): "500353ba9dfebf14",
    ("lenet5", "magnitude_global"): "4f6f9976b1dfa7f4",
    ("lenet5", "magnitude_layer"): "9e43ce8f336ddc84",
    ("lenet5", "random"): "aed489c0a6aaf53e",
}


def digest(graph):
    h = hashlib.sha256()
    for mask in masks(graph).values():
        h.update(np.packbits(mask.contiguous().numpy()).tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("model_name, name", sorted(OLD_DIGESTS))
def test_magnitude_and_random_give_the_old_masks(model_name, name):
    _, graph, *_ = setup(model_name)
    _, legacy, *_ = setup(model_name)
    gen, legacy_gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for frac in (0.6, 0.3):
        budget = Budget(per_layer={layer.name: round(frac * layer.module.weight.numel()) for layer in graph.layers()})
        get_method(name).prune(graph, None, None, budget, gen)
        prune_to_counts(legacy, name, budget.total if name == "magnitude_global" else dict(budget.per_layer),
                        legacy_gen)
    assert digest(graph) == digest(legacy)  # the historical wrapper is the same implementation
    if torch.__version__.startswith("2.13"):  # randperm's stream (and topk's tie order) may change with torch
        assert digest(graph) == OLD_DIGESTS[(model_name, name)]
