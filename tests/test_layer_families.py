"""Every layer family torch.nn ships (issue 29): convolutions of any dimension and transposed ones, BatchNorm3d,
InstanceNorm, GroupNorm, PReLU, padding, embedding tables fed token ids, forwards with several inputs, and
recurrent layers kept whole and reported. Each zoo network prunes with units removed and exports to a model whose
outputs equal the masked one's; the general conv score equals the 2-D one where both apply."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from nets import FAMILIES, BagOfEmbeddings, GroupNormResNet, RecurrentTagger, TextCNN, token_batch
from torch import nn

from relief_nb import CompactModel, ReliefConfig, export_pruned, layer_table, relief_prune, score_layers
from relief_nb.core.batches import call_model, spec_of
from relief_nb.core.general_scores import MapScoreAccumulator
from relief_nb.core.scores import ConvScoreAccumulator
from relief_nb.graph.trace import alive_units

AGGREGATIONS = ("sample_l2", "mean_l2", "mean_l1")


def _prune(name: str, passes: int = 2, alpha: float = 0.7):
    make, batch = FAMILIES[name]
    torch.manual_seed(0)
    model = make().eval()
    x = batch(128, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: a pass may remove most of them, which warns
        for _ in range(passes):
            graph = relief_prune(model, x, ReliefConfig(alpha_conv=alpha, alpha_fc=alpha))
    return model, graph, x, batch


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_prunes_with_units_removed_and_exports_equal(name):
    model, graph, x, batch = _prune(name)
    removed = sum(layer.out_units - int(alive_units(layer).sum()) for layer in graph.layers())
    # random weights and alpha 0.7 twice: selection leaves units that no later layer reads (backward pruning)
    assert removed > 0, name
    exported = export_pruned(model, x)
    probe = batch(16, 1)
    with torch.no_grad():
        torch.testing.assert_close(call_model(exported, probe), call_model(model, probe), rtol=1e-4, atol=1e-5)
    dense = FAMILIES[name][0]()
    assert sum(p.numel() for p in exported.parameters()) < sum(p.numel() for p in dense.parameters())


@pytest.mark.parametrize("name", ["kws_conv1d", "volume_conv3d", "unet_transposed", "denoiser_transposed1d",
                                  "groupnorm_resnet", "prelu_mish_silu", "text_cnn_embedding"])
def test_compact_retraining_takes_every_family(name):
    """The compact copy (sliced like the export, masks kept) computes what the masked model computes, and its
    weights go back into the full model."""
    model, graph, x, batch = _prune(name)
    compact = CompactModel(model, graph)
    compact.check(spec_of(x) if not x.is_floating_point() else tuple(x.shape[1:]), batch(8, 2))
    assert compact.parameter_fraction() < 1
    with torch.no_grad():
        for p in compact.model.parameters():
            p.add_(0.01)
    compact.write_back()
    with torch.no_grad():
        torch.testing.assert_close(call_model(compact.model.eval(), batch(8, 3)), call_model(model, batch(8, 3)),
                                   rtol=1e-4, atol=1e-5)


def _scores(layer: nn.Module, x: torch.Tensor, aggregation: str) -> torch.Tensor:
    return score_layers(nn.Sequential(layer), x, ReliefConfig(conv_aggregation=aggregation))["0"]


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize(("k", "stride", "padding", "dilation"), [(3, 1, 1, 1), (5, 2, 2, 1), (3, 1, 2, 2)])
def test_conv1d_scores_equal_those_of_the_conv2d_of_height_one(aggregation, k, stride, padding, dilation):
    torch.manual_seed(1)
    c1 = nn.Conv1d(5, 7, k, stride, padding, dilation)
    c2 = nn.Conv2d(5, 7, (1, k), (1, stride), (0, padding), (1, dilation))
    with torch.no_grad():
        c2.weight.copy_(c1.weight.unsqueeze(2))
        c2.bias.copy_(c1.bias)
    x = torch.randn(40, 5, 23)
    torch.testing.assert_close(_scores(c1, x, aggregation), _scores(c2, x.unsqueeze(2), aggregation),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_conv3d_scores_equal_those_of_the_conv2d_of_depth_one(aggregation):
    torch.manual_seed(2)
    c3 = nn.Conv3d(4, 6, (1, 3, 3), (1, 2, 1), (0, 1, 1))
    c2 = nn.Conv2d(4, 6, 3, (2, 1), 1)
    with torch.no_grad():
        c2.weight.copy_(c3.weight.squeeze(2))
        c2.bias.copy_(c3.bias)
    x = torch.randn(30, 4, 1, 11, 9)
    torch.testing.assert_close(_scores(c3, x, aggregation), _scores(c2, x.squeeze(2), aggregation),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_the_general_form_equals_every_2d_form(aggregation):
    torch.manual_seed(3)
    conv = nn.Conv2d(6, 5, 3, stride=2, padding=1)
    x = torch.randn(20, 6, 9, 9)
    forms = ("auto", "direct", "patch", "pixel") if aggregation == "sample_l2" else ("auto",)
    general = MapScoreAccumulator(conv, aggregation)
    general.update(x, conv.weight)
    expected = general.scores(conv.weight, conv.bias)
    for form in forms:
        special = ConvScoreAccumulator(conv, aggregation, form)
        special.update(x, conv.weight)
        torch.testing.assert_close(special.scores(conv.weight, conv.bias), expected, rtol=1e-4, atol=1e-6)


def test_transposed_conv_scores_follow_the_definition():
    """s_jc = mean_n || |K_cj| (*)^T |x_nc| ||, one (c, j) pair at a time with the layer's own functional."""
    torch.manual_seed(4)
    t = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)
    x = torch.randn(10, 3, 5, 5)
    got = _scores(t, x, "sample_l2")
    a, k = x.abs(), t.weight.abs()
    want = torch.zeros(4, 3)
    for j in range(4):
        for c in range(3):
            maps = F.conv_transpose2d(a[:, c:c + 1], k[c:c + 1, j:j + 1], None, 2, 1, 1)
            want[j, c] = maps.flatten(1).norm(dim=1).mean()
    positions = 10 * 10
    torch.testing.assert_close(got[:, :3], want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[:, 3], t.bias.abs() * positions ** 0.5)


def test_embedding_scores_are_the_linear_scores_over_one_hot_ids():
    torch.manual_seed(5)
    emb = nn.Embedding(30, 8)
    ids = token_batch(50, length=7, vocab=30)
    lin = nn.Linear(30, 8, bias=False)
    with torch.no_grad():
        lin.weight.copy_(emb.weight.T)
    one_hot = F.one_hot(ids, 30).float()  # (N, T, V): a sequence, scored over batch and positions
    torch.testing.assert_close(score_layers(nn.Sequential(emb), ids)["0"],
                               score_layers(nn.Sequential(lin), one_hot)["0"], rtol=1e-5, atol=1e-7)


def test_group_norm_export_removes_whole_groups_only():
    model, graph, x, _ = _prune("groupnorm_resnet")
    exported = export_pruned(model, x)
    for name, m in exported.named_modules():
        if isinstance(m, nn.GroupNorm):
            original = dict(GroupNormResNet().named_modules())[name]
            size = original.num_channels // original.num_groups
            assert m.num_channels == m.num_groups * size and m.weight.numel() == m.num_channels


def test_recurrent_layers_are_kept_whole_and_listed_in_the_report():
    model = RecurrentTagger().eval()
    ids = token_batch(64, vocab=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = relief_prune(model, ids, ReliefConfig(alpha_fc=0.7))
    assert "lstm" in graph.kept_whole and "recurrent" in graph.kept_whole["lstm"]
    table = layer_table(model, graph)
    row = table[table.layer == "lstm"].iloc[0]
    assert row.kind.startswith("kept whole") and row.weights == sum(p.numel() for p in model.lstm.parameters())
    assert not hasattr(model.lstm, "weight_ih_l0_mask")
    assert int(alive_units(graph.layer("embed")).sum()) == 16  # read whole by the LSTM: no embedding dim removed
    export_pruned(model, ids)


def test_ignored_modules_are_listed_too():
    model = BagOfEmbeddings().eval()
    graph = relief_prune(model, token_batch(32), ignore=["fc1"])
    assert graph.kept_whole == {"fc1": "Linear, ignore="}


def test_token_ids_trace_with_their_dtype_and_a_wrong_spec_is_named():
    model = TextCNN().eval()
    relief_prune(model, token_batch(16))
    with pytest.raises(ValueError, match=r"\(N, 9\) torch.int64 but the model expects \(N, 12\) torch.int64"):
        relief_prune(model, token_batch(16, length=9), graph=relief_prune(model, token_batch(16)))


def test_a_batch_of_the_wrong_form_is_refused_in_one_line():
    model = TextCNN().eval()
    for bad, why in [("text", "must be a tensor"), ({}, "empty"), ((torch.zeros(3, 2), torch.zeros(4, 2)),
                                                                    "one non-zero batch size")]:
        with pytest.raises((TypeError, ValueError), match=why) as err:
            relief_prune(model, bad)
        assert "\n" not in str(err.value)


def _token_data(n_train: int = 300, n_test: int = 60, vocab: int = 60, length: int = 10, classes: int = 3):
    """Synthetic text (tests only): each class draws its tokens from its own third of the vocabulary, plus noise."""
    g = torch.Generator().manual_seed(0)

    def split(n: int):
        y = torch.randint(0, classes, (n,), generator=g)
        own = y[:, None] * (vocab // classes) + torch.randint(0, vocab // classes, (n, length), generator=g)
        noise = torch.randint(0, vocab, (n, length), generator=g)
        return torch.where(torch.rand(n, length, generator=g) < 0.7, own, noise), y
    (train_x, train_y), (test_x, test_y) = split(n_train), split(n_test)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def test_own_token_and_sequence_data_keep_their_form(tmp_path):
    from relief_nb import as_dataset

    ds = as_dataset(_token_data())
    assert ds.train_x.dtype == torch.int64 and ds.input_shape == (10,)
    seq = torch.randn(20, 4, 16)
    y = torch.zeros(20, dtype=torch.long)
    assert as_dataset((seq, y, seq, y)).input_shape == (1, 4, 16)  # "auto": (N, H, W) floats are images
    assert as_dataset((seq, y, seq, y), inputs="as_is").input_shape == (4, 16)  # sequences (N, C, L)
    with pytest.raises(ValueError, match="token ids, which must be >= 0"):
        as_dataset((torch.full((4, 3), -1), y[:4], torch.zeros(4, 3, dtype=torch.long), y[:4]))
    import numpy as np
    np.savez(tmp_path / "seq.npz", **{k: v.numpy() for k, v in _token_data().items()})
    assert as_dataset(tmp_path / "seq.npz").train_x.dtype == torch.int64
    (tmp_path / "broken.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"cannot read data file .*broken.pt"):
        as_dataset(tmp_path / "broken.pt")


def test_a_text_classifier_on_token_ids_runs_through_the_cli(tmp_path, monkeypatch, capsys):
    import pandas as pd

    from relief_nb.cli import main

    (tmp_path / "textnets.py").write_text(
        "from torch import nn\n\n"
        "class Bag(nn.Module):\n"
        "    def __init__(self, num_classes):\n"
        "        super().__init__()\n"
        "        self.embed = nn.Embedding(60, 16)\n"
        "        self.fc1 = nn.Linear(16, 32)\n"
        "        self.fc2 = nn.Linear(32, num_classes)\n\n"
        "    def forward(self, ids):\n"
        "        return self.fc2(self.fc1(self.embed(ids).mean(1)).relu())\n\n"
        "def make_net(num_classes):\n"
        "    return Bag(num_classes)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(_token_data(), tmp_path / "tokens.pt")
    code = main(["run", "lenet300-mnist", "--profile", "smoke", "--model", "textnets:make_net", "--data",
                 str(tmp_path / "tokens.pt"), "-p", "val_size=50", "--results-dir", str(tmp_path / "results"),
                 "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    (experiment,) = (tmp_path / "results" / "smoke" / "runs").iterdir()
    assert experiment.name.startswith("textnets-make_net_tokens_")
    layers = pd.read_csv(experiment / "seed_0" / "layers.csv")
    assert set(layers.layer) == {"embed", "fc1", "fc2"}
    last = layers[layers.iteration == layers.iteration.max()]
    assert (last.weights_remaining < last.weights).any()  # pruned, embedding table included in the count
