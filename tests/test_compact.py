"""Compact retraining: the sliced copy computes and trains as the masked model does, and the runner uses it."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from nets import ConcatNet, ForwardResidual, MobileNetV2, resnet18
from test_experiment import comparable, small
from torch import nn

from relief_nb.core.masks import effective
from relief_nb.experiments.config import ExperimentConfig, override
from relief_nb.experiments.run import Run
from relief_nb.experiments.training import TrainConfig
from relief_nb.graph.compact import CompactModel
from relief_nb.models.zoo import create_model
from relief_nb.pruning.relief import ReliefConfig, ReliefWarning, relief_prune, trace_for_batch

CASES = {
    "lenet300-100": (lambda: create_model("lenet300-100", seed=0), (1, 28, 28)),
    "lenet5": (lambda: create_model("lenet5", seed=0), (1, 28, 28)),
    "resnet20": (lambda: create_model("resnet20", seed=0), (3, 32, 32)),
    "resnet18": (lambda: resnet18(width=8), (3, 16, 16)),
    "mobilenetv2": (lambda: MobileNetV2(width=0.5), (3, 16, 16)),
    "concat": (ConcatNet, (3, 8, 8)),
    "forward-residual": (ForwardResidual, (3, 8, 8)),
}


def pruned(case: str, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, torch.Tensor]:
    """The model after two passes at alpha 0.8, channels-last as experiments train (the package's models; torch
    2.13's oneDNN crashes in the backward of a width-8 ResNet-18 in channels-last with 2 threads)."""
    torch.manual_seed(0)
    make, shape = CASES[case]
    model = make().to(dtype)
    if case in ("lenet5", "resnet20"):
        model = model.to(memory_format=torch.channels_last)
    x = torch.rand(64, *shape, dtype=dtype)
    with warnings.catch_warnings():  # a random network on random images: large removals are expected
        warnings.simplefilter("ignore", ReliefWarning)
        for _ in range(2):
            relief_prune(model.eval(), x, ReliefConfig(0.8, 0.8))
    return model, x


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 3) -> torch.optim.Optimizer:
    # SGD: its update is linear in the gradient, so float noise stays noise (Adam's first steps are ~lr * sign(g),
    # which turns a 1e-7 disagreement on a near-zero gradient into a full step)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9,
                          weight_decay=5e-4)
    model.train()
    for i in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i::steps]), y[i::steps]).backward()
        opt.step()
    return opt


@pytest.mark.parametrize("multiple", [1, 8])
@pytest.mark.parametrize("case", list(CASES))
def test_training_the_compact_copy_equals_training_the_masked_model(case, multiple):
    # float64: the two computations differ only in summation order, and BatchNorm over near-constant channels
    # amplifies float32's rounding differences beyond any meaningful tolerance within three steps
    model, x = pruned(case, torch.float64)
    y = torch.randint(0, 10, (len(x),))
    graph = trace_for_batch(model, x)
    compact = CompactModel(model, graph, multiple)
    compact.check(tuple(x.shape[1:]))
    if multiple == 1:  # rounded up to 8, a small test net's layers can be whole again
        assert compact.parameter_fraction() < 1, "something must have been sliced away"
    reference = copy.deepcopy(model)
    train_steps(reference, x, y)
    opt = train_steps(compact.model, x, y)
    compact.write_back()
    model.eval(), reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-7, atol=1e-9)
    for (name, got), (_, want) in zip(model.named_modules(), reference.named_modules()):
        if hasattr(got, "weight_mask"):
            torch.testing.assert_close(effective(got), effective(want), rtol=1e-7, atol=1e-9, msg=name)
    # the optimizer state goes to the full layout and back unchanged
    state = opt.state_dict()
    back = compact.optimizer_state_from_full(compact.optimizer_state_to_full(state))
    for k, entry in state["state"].items():
        for key, value in entry.items():
            assert torch.equal(back["state"][k][key], value)


def test_compact_lenet5_is_much_smaller():
    model, x = pruned("lenet5")
    compact = CompactModel(model, trace_for_batch(model, x))
    sizes = {name: m.weight_orig.shape for name, m in compact.model.named_modules() if hasattr(m, "weight_orig")}
    full = {name: m.weight_orig.shape for name, m in model.named_modules() if hasattr(m, "weight_orig")}
    assert sizes["fc2"][0] == full["fc2"][0], "the classifier keeps every output"
    assert any(sizes[k][0] < full[k][0] for k in sizes)


@pytest.mark.parametrize("case", ["lenet5", "resnet20", "mobilenetv2"])
def test_rounded_copy_keeps_multiples_of_8_units_and_every_alive_one(case):
    model, x = pruned(case)
    graph = trace_for_batch(model, x)
    exact, rounded = CompactModel(model, graph), CompactModel(model, graph, multiple=8)
    full = dict(model.named_modules())
    grew = False
    for name, m in rounded.model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            units, whole = m.weight_orig.shape[0], full[name].weight_orig.shape[0]
            assert units % 8 == 0 or units == whole, (name, units)
            kept = exact.model.get_submodule(name).weight_orig.shape[0]
            assert units >= kept
            grew |= units > kept
    assert grew, "some layer's count was not a multiple of 8: rounding must have kept removed units"
    rounded.check(tuple(x.shape[1:]))


def test_runs_with_and_without_compaction_agree(tmp_path):
    cfg = small("lenet5", iterations=2)
    on = Run(cfg, tmp_path / "on", progress=False).run()
    off = Run(override(cfg, compact=False), tmp_path / "off", progress=False).run()
    assert on.shape == off.shape
    for column in ("val_acc", "test_acc"):
        assert (on[column] - off[column]).abs().max() <= 0.02, column
    assert ((on.compression - off.compression).abs() / off.compression).max() < 0.02


def test_compaction_is_not_part_of_the_run_identity():
    a = ExperimentConfig.of(model="lenet5")
    b = ExperimentConfig.of(model="lenet5", compact=False)
    assert a.experiment_name("fp") == b.experiment_name("fp")
    with pytest.raises(ValueError, match="compact"):
        ExperimentConfig.of(compact="yes")


@pytest.mark.parametrize("second", [True, False])
def test_resume_of_a_compact_stage_with_compaction_on_or_off(tmp_path, second):
    cfg = small("lenet5", iterations=1, retrain=TrainConfig(3, milestones=(2,), batch_size=60))
    straight = Run(cfg, tmp_path / "straight", progress=False).run()
    run = Run(cfg, tmp_path / "stopped", progress=False)
    with pytest.raises(KeyboardInterrupt):
        run.run(stop_after_epochs=2 + 1)  # pretraining (2 epochs) and one retraining epoch
    resumed_cfg = override(cfg, compact=second)
    resumed = Run(resumed_cfg, tmp_path / "stopped", progress=False).run()
    if second:
        assert comparable(resumed).equals(comparable(straight))
    else:
        assert (resumed.test_acc - straight.test_acc).abs().max() <= 0.02


class HardCoded(nn.Module):
    """A forward that hard-codes a channel count: it cannot be sliced, so it retrains masked."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 5)
        self.fc = nn.Linear(6 * 24 * 24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).reshape(-1, 6 * 24 * 24))


def test_a_model_that_cannot_be_sliced_retrains_masked_with_a_warning(tmp_path):
    cfg = small("hardcoded", iterations=1, alpha_conv=0.5)
    with pytest.warns(UserWarning, match="compact retraining is off"):
        metrics = Run(cfg, tmp_path, progress=False, model=HardCoded).run()
    assert len(metrics) == 2


def test_alpha_increment_raises_alpha_per_iteration_up_to_one():
    cfg = ExperimentConfig.of(alpha_conv=0.9, alpha_fc=0.95, alpha_increment=0.02)
    assert cfg.relief_at(1).alpha_fc == 0.95
    assert cfg.relief_at(2).alpha_conv == pytest.approx(0.92)
    assert cfg.relief_at(5).alpha_fc == 1.0
    default = ExperimentConfig.of()
    assert default.relief_at(7) is default.method.relief
    with pytest.raises(ValueError, match="alpha_increment"):
        ExperimentConfig.of(alpha_increment=1.5)


def test_a_run_of_a_batchnorm_resnet_retrains_compact(tmp_path):
    """The copy is checked in eval mode even though the model is in train mode when a stage starts."""
    cfg = ExperimentConfig.of(model="resnet20", dataset="cifar10", synthetic=True, n_train=240, n_test=60,
                              val_size=60, scoring_size=32, iterations=1, alpha_conv=0.8, alpha_fc=0.8,
                              pretrain=TrainConfig(1, batch_size=60), retrain=TrainConfig(1, batch_size=60))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="compact retraining is off")
        metrics = Run(cfg, tmp_path, progress=False).run()
    assert metrics.compression.iloc[-1] > 1
