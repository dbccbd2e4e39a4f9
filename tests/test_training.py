"""Training-loop details that change speed, not results: subnormal floats are flushed before every epoch."""

import torch
from torch import nn

from relief_nb.data.datasets import Dataset
from relief_nb.experiments.training import TrainConfig, make_optimizer, train_epoch


def subnormal_count(t: torch.Tensor) -> int:
    """Read from the bits (exponent 0, mantissa not 0): a comparison would see zero under denormals-are-zero."""
    bits = t.detach().float().view(torch.int32)
    return int((((bits & 0x7F800000) == 0) & ((bits & 0x7FFFFFFF) != 0)).sum())


def test_an_epoch_leaves_no_subnormal_weight_or_adam_state():
    # the first input feature is 0 in every example, so the weights reading it get no gradient: without the
    # flush, Adam leaves them (and their moments) exactly where they are, subnormal
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 4, generator=g)
    x[:, 0] = 0
    y = torch.randint(0, 3, (64,), generator=g)
    ds = Dataset("toy", x, y, x[:8], y[:8], num_classes=3, synthetic=True)
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight[:, 0] = 1e-40
    cfg = TrainConfig(1, weight_decay=0.0, batch_size=16)
    opt, _ = make_optimizer(model, cfg)
    # the state of a resumed run whose second moments decayed into the subnormal range
    opt.state[model.weight] = {"step": torch.tensor(100.0), "exp_avg": torch.zeros_like(model.weight),
                               "exp_avg_sq": torch.full_like(model.weight, 1e-41)}
    assert subnormal_count(model.weight) == 3

    train_epoch(model, x, y, ds, cfg, opt, torch.device("cpu"), torch.Generator().manual_seed(1))

    assert subnormal_count(model.weight) == 0 and (model.weight[:, 0] == 0).all()
    assert all(subnormal_count(v) == 0 for state in opt.state.values() for v in state.values()
               if torch.is_tensor(v) and v.is_floating_point())
    assert (model.weight[:, 1:].abs() > 1e-3).all()  # the trained weights are untouched
    assert torch.tensor([1e-39]).mul(1.0).item() != 0  # flush-to-zero was on for the epoch only


# ---------------------------------------------------------------------------------------------- the loop
import copy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from relief_nb import synthetic_dataset  # noqa: E402
from relief_nb.experiments.training import evaluate  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from legacy_loop import legacy_evaluate, legacy_train_epoch  # noqa: E402


def small_cifar():
    ds = synthetic_dataset("cifar10", n_train=600, n_test=200, seed=0)  # augmented: random crops and flips
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                          nn.Linear(8 * 8 * 8, 10))
    return ds, model


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_device_resident_loop_gives_the_old_loops_weights_on_the_cpu(optimizer):
    ds, model = small_cifar()
    twin = copy.deepcopy(model)
    cfg = TrainConfig(2, optimizer=optimizer, batch_size=64)
    cpu = torch.device("cpu")
    results = []
    for net, epoch_fn in ((model, train_epoch), (twin, legacy_train_epoch)):
        opt, sched = make_optimizer(net, cfg)
        g = torch.Generator().manual_seed(3)
        losses = [epoch_fn(net, ds.train_x, ds.train_y, ds, cfg, opt, cpu, g) for _ in range(cfg.epochs)]
        results.append((losses, [p.detach().clone() for p in net.parameters()]))
    (new_losses, new_params), (old_losses, old_params) = results
    assert all(torch.equal(a, b) for a, b in zip(new_params, old_params))
    assert new_losses == pytest.approx(old_losses, rel=1e-12)
    assert evaluate(model, ds.test_x, ds.test_y, ds, cpu) == legacy_evaluate(twin, ds.test_x, ds.test_y, ds, cpu)


def test_the_loop_keeps_every_tensor_on_the_device():
    """Under the CPU stand-in for a GPU (tests/device_guard.py), with the data on the device as a run puts it."""
    from device_guard import DeviceGuard

    ds, model = small_cifar()
    cfg = TrainConfig(1, batch_size=64)
    opt, _ = make_optimizer(model, cfg)
    guard = DeviceGuard(model, ds.train_x, ds.train_y, ds.test_x, ds.test_y)
    with guard:
        device = ds.train_x.device  # reads as "the device" under the guard
        train_epoch(model, ds.train_x, ds.train_y, ds, cfg, opt, device, torch.Generator().manual_seed(0))
        evaluate(model, ds.test_x, ds.test_y, ds, device)
    assert guard.violations == [], "\n".join(guard.violations[:5])


def test_bf16_autocast_is_an_option_that_changes_training_only_when_asked():
    ds, model = small_cifar()
    twin = copy.deepcopy(model)
    cpu = torch.device("cpu")
    for net, precision in ((model, "fp32"), (twin, "bf16")):
        cfg = TrainConfig(1, batch_size=64, precision=precision)
        opt, _ = make_optimizer(net, cfg)
        loss = train_epoch(net, ds.train_x, ds.train_y, ds, cfg, opt, cpu, torch.Generator().manual_seed(0))
        assert loss == loss and loss < 10  # finite
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    assert TrainConfig().precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        TrainConfig(precision="fp16")


def test_distillation_loss_is_the_cross_entropy_at_weight_zero_and_the_formula_otherwise():
    import math

    import torch.nn.functional as F

    from relief_nb.experiments.training import distillation_loss

    g = torch.Generator().manual_seed(0)
    z, t, y = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g), torch.randint(0, 5, (8,), generator=g)
    ce = F.cross_entropy(z, y)
    assert torch.equal(distillation_loss(z, y, t, 0.0, 4.0), ce)
    assert torch.equal(distillation_loss(z, y, None, 0.7, 4.0), ce)
    # by hand: student logits (0, 0), teacher (ln 3, 0), T = 1, weight 1: KL((3/4, 1/4) || (1/2, 1/2))
    hand = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    got = distillation_loss(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([[math.log(3), 0.0]]), 1.0, 1.0)
    assert abs(float(got) - hand) < 1e-6
    temperature, weight = 3.0, 0.25  # the formula, in float64, on a batch
    p_t = torch.softmax(t.double() / temperature, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(z.double() / temperature, 1))).sum(1).mean()
    expected = (1 - weight) * F.cross_entropy(z.double(), y) + weight * temperature ** 2 * kl
    torch.testing.assert_close(distillation_loss(z.double(), y, t.double(), weight, temperature), expected)


def test_distillation_retrains_from_the_dense_network_and_leaves_the_papers_runs_alone(tmp_path, monkeypatch):
    from relief_nb import ExperimentConfig, Run
    from relief_nb.experiments import training

    assert "distill" not in TrainConfig().to_dict()  # runs made before the option keep their names
    with pytest.raises(ValueError, match="pretrain_distill must be 0"):
        ExperimentConfig.of(pretrain_distill=0.5)
    with pytest.raises(ValueError, match="retrain_distill must be a weight in"):
        ExperimentConfig.of(retrain_distill=1.5)
    seen = []
    real = training.distillation_loss

    def spy(logits, targets, teacher_logits=None, weight=0.0, temperature=4.0):
        seen.append((teacher_logits is not None, weight, temperature))
        return real(logits, targets, teacher_logits, weight, temperature)

    monkeypatch.setattr(training, "distillation_loss", spy)
    base = dict(model="lenet300-100", synthetic=True, n_train=400, n_test=100, val_size=100, scoring_size=64,
                iterations=1, pretrain=TrainConfig(1, batch_size=100), retrain=TrainConfig(1, batch_size=100))
    plain = Run(ExperimentConfig.of(**base), tmp_path, progress=False)
    assert plain.run_name() == Run(ExperimentConfig.of(**base, retrain_distill=0.0), tmp_path).run_name()
    plain.run()
    assert not seen
    distilled = Run(ExperimentConfig.of(**base, retrain_distill=0.5, retrain_temperature=2.0), tmp_path,
                    progress=False)
    assert distilled.run_name() != plain.run_name()
    metrics = distilled.run()
    assert seen and all(s == (True, 0.5, 2.0) for s in seen) and len(seen) == 3  # 3 retraining batches, 1 epoch
    assert metrics.iteration.tolist() == [0, 1]
    teacher = distilled._teacher()
    dense = torch.load(distilled.iteration_folder(0) / "model.pt")
    assert torch.equal(teacher.state_dict()["fc1.weight"], dense["fc1.weight"])
