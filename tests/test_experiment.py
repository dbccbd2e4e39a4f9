"""The iterative experiment on a small synthetic stand-in: records, resumption, determinism, bad input."""

import json

import pandas as pd
import pytest
import torch

from relief_nb.experiments import run as experiment_module
from relief_nb.experiments.checkpoints import CheckpointError
from relief_nb.experiments.config import ExperimentConfig, override
from relief_nb.experiments.presets import experiment_config
from relief_nb.experiments.run import Run
from relief_nb.experiments.training import TrainConfig

SMALL = dict(synthetic=True, n_train=600, n_test=200, val_size=100, scoring_size=64,
             pretrain=TrainConfig(2, milestones=(1,), batch_size=60), retrain=TrainConfig(2, milestones=(1,),
                                                                                           batch_size=60))


def small(model="lenet300-100", **kw):
    return ExperimentConfig.of(model=model, **{"iterations": 2, **SMALL, **kw})


def masks_of(run):
    return {k: v for k, v in torch.load(run.folder / "final.pt").items() if k.endswith("_mask")}


def comparable(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics.drop(columns=["wall_time_s"])


def test_run_records_every_iteration(tmp_path):
    run = Run(small(), tmp_path, progress=False)
    metrics = run.run()
    assert metrics.iteration.tolist() == [0, 1, 2]
    assert metrics.compression.iloc[0] == 1 and metrics.compression.is_monotonic_increasing
    assert metrics.compression.iloc[-1] > 1.5
    for name in ("config.json", "metrics.csv", "metrics.json", "layers.csv", "final.pt", "checkpoint.pt",
                 "init.pt", "iterations/00/model.pt", "iterations/02/model.pt", "iterations/02/metrics.json"):
        assert (run.folder / name).exists(), name
    assert json.loads((run.folder / "run.json").read_text())["synthetic"] is True
    layers = run.layers()
    assert set(layers.layer) == {"fc1", "fc2", "fc3"} and len(layers) == 9
    # masks only shrink from iteration to iteration
    m1, m2 = (torch.load(run.iteration_folder(i) / "model.pt") for i in (1, 2))
    for key in m1:
        if key.endswith("_mask"):
            assert (m2[key] <= m1[key]).all()
    assert run.folder.name == "seed_0"
    assert run.folder.parent.name.startswith("lenet300-100_mnist-synthetic_ac0.9_af0.95_")
    model = run.load_model()
    assert sum(int(m.sum()) for k, m in model.state_dict().items() if k.endswith("weight_mask")) > 0


def test_rewind_restores_initial_weights_keeping_masks(tmp_path):
    # retraining at a learning rate of 1e-12 leaves the rewound weights where rewinding put them (a stage needs an
    # epoch); without rewinding they would be the pretrained ones, far from the initial ones
    cfg = small(iterations=1, retrain=TrainConfig(1, lr=1e-12))
    run = Run(cfg, tmp_path, progress=False)
    run.run()
    init, final = torch.load(run.folder / "init.pt"), torch.load(run.folder / "final.pt")
    assert not torch.allclose(torch.load(run.iteration_folder(0) / "model.pt")["fc1.weight"], init["fc1.weight"],
                              atol=1e-4)
    assert torch.allclose(final["fc1.weight_orig"], init["fc1.weight"], rtol=0, atol=1e-8)
    assert (final["fc1.weight_mask"] == 0).any()


@pytest.mark.parametrize("model, stop_after", [("lenet300-100", 3), ("lenet5", 4)])
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, model, stop_after):
    cfg = small(model=model, n_train=400, val_size=100)
    straight = Run(cfg, tmp_path / "a", progress=False)
    expected = straight.run()
    interrupted = Run(cfg, tmp_path / "b", progress=False)
    with pytest.raises(KeyboardInterrupt):
        interrupted.run(stop_after_epochs=stop_after)  # inside the first retraining
    state = torch.load(interrupted.checkpoint_path, weights_only=False)
    assert state["phase"] == "retrain" and state["iteration"] == 1
    resumed = Run(cfg, tmp_path / "b", progress=False).run()
    pd.testing.assert_frame_equal(comparable(resumed), comparable(expected))
    a, b = masks_of(straight), masks_of(interrupted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_results_other_seed_differs(tmp_path):
    runs = [Run(small(seed=s), tmp_path / str(i), progress=False) for i, s in enumerate((0, 0, 1))]
    m = [comparable(r.run()) for r in runs]
    pd.testing.assert_frame_equal(m[0], m[1])
    assert not m[0].equals(m[2])


def test_corrupt_checkpoint_is_reported_and_left_alone(tmp_path):
    run = Run(small(iterations=0), tmp_path, progress=False)
    run.run()
    good = run.checkpoint_path.read_bytes()
    run.checkpoint_path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Run(small(iterations=0), tmp_path, progress=False).run()
    assert run.checkpoint_path.read_bytes() == good[: len(good) // 2]


def test_failed_checkpoint_write_keeps_previous_good_one(tmp_path, monkeypatch):
    run = Run(small(), tmp_path, progress=False)
    with pytest.raises(KeyboardInterrupt):
        run.run(stop_after_epochs=1)
    good = run.checkpoint_path.read_bytes()
    real_save = torch.save

    def failing_save(obj, target, *args, **kwargs):  # a path, or the file atomic_write opened
        if hasattr(target, "write"):
            target.write(b"partial")
        else:
            with open(target, "wb") as f:
                f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(experiment_module.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        Run(small(), tmp_path, progress=False).run()
    monkeypatch.setattr(experiment_module.torch, "save", real_save)
    assert run.checkpoint_path.read_bytes() == good
    assert not list(run.folder.glob(".*.tmp"))  # nothing half-written left behind


def test_tolerance_stops_and_keeps_last_good_model(tmp_path):
    run = Run(small(iterations=3, alpha_fc=0.3, tolerance=0.0), tmp_path, progress=False)
    metrics = run.run()
    info = json.loads((run.folder / "run.json").read_text())
    assert info["stopped_early"] and len(metrics) < 4
    assert (metrics.val_acc >= metrics.val_acc.iloc[0]).all()


def test_target_compression_ends_the_run_at_the_first_iteration_reaching_it(tmp_path):
    full = Run(small(iterations=4, alpha_fc=0.5), tmp_path / "full", progress=False).run()
    target = float(full.compression.iloc[2]) - 1e-9  # reached at iteration 2, not before
    assert full.compression.iloc[1] < target
    run = Run(small(iterations=4, alpha_fc=0.5, target_compression=target), tmp_path / "target", progress=False)
    metrics = run.run()
    assert metrics.iteration.tolist() == [0, 1, 2]
    pd.testing.assert_frame_equal(comparable(metrics), comparable(full.iloc[:3]))
    with pytest.raises(ValueError, match="target_compression"):
        small(target_compression=0.5)


def test_unknown_names_list_the_known_ones(tmp_path):
    # a name that is neither registered nor given as a factory / data fails before anything is written
    with pytest.raises(KeyError, match="lenet5.*package.module:function"):
        Run(small(model="alexnet"), tmp_path, progress=False).run()
    with pytest.raises(KeyError, match="cifar10.*data="):
        Run(ExperimentConfig.of(dataset="svhn"), tmp_path, progress=False).run()
    with pytest.raises(KeyError, match="synthetic stand-ins"):
        small(dataset="svhn")
    assert not any(tmp_path.iterdir())
    with pytest.raises(KeyError, match="lenet300-mnist"):
        experiment_config("alexnet-imagenet")
    with pytest.raises(KeyError, match="smoke"):
        experiment_config("lenet5-mnist", "huge")
    with pytest.raises(ValueError, match="alpha_fc"):
        override(small(), alpha_fcc=0.3)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        small(alpha_fc=1.2)


def test_missing_data_names_the_fetch_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="relief-nb fetch mnist"):
        Run(ExperimentConfig.of(), tmp_path, data_dir=tmp_path / "nodata", progress=False).run()


def test_presets_follow_the_spec_table():
    cfg = experiment_config("resnet20-cifar10", "paper")
    assert (cfg.method.relief.alpha_conv, cfg.method.relief.alpha_fc, cfg.schedule.iterations) == (0.95, 0.99, 10)
    retrain = cfg.schedule.retrain
    assert (retrain.optimizer, retrain.lr, retrain.milestones) == ("sgd", 0.1, (20, 40))
    assert not cfg.rewinds and experiment_config("lenet5-mnist", "paper").rewinds
    assert experiment_config("resnet56-cifar100", "paper").data.scoring_size == 2000
    smoke = experiment_config("lenet5-mnist", "smoke", retrain_epochs=3)
    assert smoke.schedule.retrain.epochs == 3 and smoke.schedule.pretrain.epochs == 2


def test_milestones_of_older_checkpoints_are_repaired():
    """Checkpoints written through dataclasses.asdict stored Counter({30: 1}) as Counter({(30, 1): 1}), one more
    layer per resumption; a resumed run must decay its learning rate where the schedule says."""
    from collections import Counter

    from relief_nb.experiments.checkpoints import _repaired_milestones

    assert _repaired_milestones(Counter({((30, 1), 1): 1, ((45, 1), 1): 1})) == Counter({30: 1, 45: 1})
    assert _repaired_milestones(Counter({30: 1})) == Counter({30: 1})
