"""Bring your own model and data: the whole iterative experiment on a network and a data set defined here (not in
the registry), through the Python API and the command line; what makes a run the same run or a new one."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from relief_nb.cli import main
from relief_nb.data.datasets import Dataset
from relief_nb.data.userdata import as_dataset, data_fingerprint, load_image_folder
from relief_nb.experiments.config import ExperimentConfig, override
from relief_nb.experiments.run import Run
from relief_nb.experiments.training import TrainConfig

STAGE = TrainConfig(2, "adam", 1e-2, milestones=(1,), batch_size=25)


def blobs(n_train=400, n_test=100, classes=3, seed=0, side=8):
    """A small learnable data set: each class a fixed random 1 x side x side pattern plus noise, as floats."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(classes, 1, side, side, generator=g)

    def make(n):
        y = torch.randint(0, classes, (n,), generator=g)
        return 0.9 * protos[y] + 0.1 * torch.rand(n, 1, side, side, generator=g), y

    return (*make(n_train), *make(n_test))


def make_net(num_classes, input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 32), nn.ReLU(),
                         nn.Linear(32, num_classes))


def config(**kw):
    base = dict(model="tiny-mlp", dataset="blobs", iterations=2, val_size=50, scoring_size=64, pretrain=STAGE,
                retrain=STAGE, alpha_fc=0.9)
    return ExperimentConfig.of(**{**base, **kw})


def comparable(m: pd.DataFrame) -> pd.DataFrame:
    return m.drop(columns=["wall_time_s"])


def masks_of(run):
    return {k: v for k, v in torch.load(run.folder / "final.pt").items() if k.endswith("_mask")}


def test_full_experiment_on_a_model_and_data_defined_here(tmp_path):
    data = blobs()
    before = data[0].clone()
    run = Run(config(), tmp_path, data=data, model=make_net, progress=False)
    metrics = run.run()
    assert metrics.iteration.tolist() == [0, 1, 2]
    assert metrics.compression.iloc[-1] > 1.5 and metrics.test_acc.iloc[0] > 0.8
    assert torch.equal(data[0], before)  # the caller's float images are read, never scaled in place
    assert run.folder.name == "seed_0" and run.folder.parent.name.startswith("tiny-mlp_blobs_ac0.9_af0.9_")
    info = json.loads((run.folder / "run.json").read_text())
    assert info["data"] == "blobs" and info["data_fingerprint"] == data_fingerprint(as_dataset(data))
    assert info["model_fingerprint"] and info["relief_nb"]
    assert isinstance(run.load_model(), nn.Sequential)
    # n_train / n_test are honoured for data of your own too
    small = Run(config(n_train=200, n_test=40), tmp_path, data=data, model=make_net, progress=False)
    assert len(small._data().train_y) == 200 and len(small._data().test_y) == 40
    assert small.folder != run.folder


def write_class_folders(root, data, n_per_split=(300, 60)):
    from PIL import Image

    train_x, train_y, test_x, test_y = data
    for split, x, y, n in (("train", train_x, train_y, n_per_split[0]), ("test", test_x, test_y, n_per_split[1])):
        for i in range(n):
            folder = root / split / f"class{int(y[i])}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((x[i, 0] * 255).to(torch.uint8).numpy()).save(folder / f"{i:04d}.png")


def test_full_experiment_through_the_cli(tmp_path, monkeypatch, capsys):
    (tmp_path / "mynets.py").write_text(
        "from torch import nn\n\n"
        "def make_net(num_classes, in_channels):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, 32), nn.ReLU(),\n"
        "                         nn.Linear(32, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    write_class_folders(tmp_path / "digits", blobs(n_train=300, n_test=60))
    code = main(["run", "lenet300-mnist", "--profile", "smoke", "--model", "mynets:make_net", "--data",
                 str(tmp_path / "digits"), "-p", "val_size=50", "--results-dir", str(tmp_path / "results"),
                 "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    experiments = list((tmp_path / "results" / "smoke" / "runs").iterdir())
    assert len(experiments) == 1 and experiments[0].name.startswith("mynets-make_net_digits_")
    folders = [experiments[0] / "seed_0"]
    metrics = pd.read_csv(folders[0] / "metrics.csv")
    assert metrics.iteration.tolist() == [0, 1, 2] and metrics.compression.iloc[-1] > 1
    info = json.loads((folders[0] / "run.json").read_text())
    assert info["preset"] == "lenet300-mnist" and info["profile"] == "smoke" and info["data"] == "digits"
    # a factory that cannot be imported is a usage error, and nothing is written
    code = main(["run", "lenet300-mnist", "--profile", "smoke", "--model", "nosuchmodule:make", "--data",
                 str(tmp_path / "digits"), "--results-dir", str(tmp_path / "r2")])
    assert code == 2 and "nosuchmodule" in capsys.readouterr().err and not (tmp_path / "r2").exists()


def test_folders_tensors_and_torch_datasets_give_the_same_data(tmp_path):
    data = blobs(n_train=30, n_test=12)
    write_class_folders(tmp_path / "imgs", data, (30, 12))
    from_folder = load_image_folder(tmp_path / "imgs")
    assert from_folder.train_x.dtype == torch.uint8 and from_folder.input_shape == (1, 8, 8)
    uint8 = tuple(t if i % 2 else (t * 255).to(torch.uint8) for i, t in enumerate(data))
    pairs = [torch.utils.data.TensorDataset(uint8[0], uint8[1]), torch.utils.data.TensorDataset(uint8[2], uint8[3])]
    from_torch = as_dataset(pairs)
    from_dict = as_dataset(dict(zip(("train_x", "train_y", "test_x", "test_y"), uint8)))
    assert data_fingerprint(from_torch) == data_fingerprint(from_dict)
    # the folder's classes are its sorted folder names, images in file order within each: the same examples
    order = torch.argsort(data[1], stable=True)
    assert torch.equal(from_folder.train_y, data[1][order]) and torch.equal(from_folder.train_x, uint8[0][order])


@pytest.mark.parametrize("bad, message", [
    ((torch.zeros(4, 1, 8, 8, dtype=torch.int64), torch.zeros(4, dtype=torch.long)) * 2, "uint8 pixels"),
    ((torch.rand(4, 1, 8, 8), torch.rand(4)) * 2, "integer class indices"),
    ((torch.rand(4, 1, 8, 8), torch.zeros(3, dtype=torch.long)) * 2, "has 4 examples but train_y has 3"),
    ((torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), torch.rand(4, 1, 9, 9),
      torch.zeros(4, dtype=torch.long)), "same per-example shape"),
    ("not/a/folder", "does not exist"),
    (42, "must be a relief_nb Dataset"),
])
def test_bad_data_is_refused_with_the_reason(bad, message):
    with pytest.raises((TypeError, ValueError, FileNotFoundError), match=message):
        as_dataset(bad)


def test_labels_beyond_num_classes_are_refused():
    x, y, tx, ty = blobs(n_train=20, n_test=10)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        as_dataset((x, y, tx, ty), num_classes=2)


def test_more_iterations_continue_the_same_folder(tmp_path):
    data = blobs()
    straight = Run(config(iterations=3), tmp_path / "a", data=data, model=make_net, progress=False)
    expected = straight.run()
    short = Run(config(iterations=1), tmp_path / "b", data=data, model=make_net, progress=False)
    assert short.run().iteration.tolist() == [0, 1]
    longer = Run(config(iterations=3), tmp_path / "b", data=data, model=make_net, progress=False)
    assert longer.folder == short.folder and not longer.finished()
    pd.testing.assert_frame_equal(comparable(longer.run()), comparable(expected))
    a, b = masks_of(straight), masks_of(longer)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # asking for fewer reads the first iterations back, with nothing to do
    again = Run(config(iterations=1), tmp_path / "b", data=data, model=make_net, progress=False)
    assert again.finished() and again.metrics().iteration.tolist() == [0, 1]


def test_a_higher_target_compression_continues_the_run(tmp_path):
    data = blobs()
    full = Run(config(iterations=3), tmp_path / "a", data=data, model=make_net, progress=False).run()
    low = float(full.compression.iloc[1]) - 1e-9
    first = Run(config(iterations=3, target_compression=low), tmp_path / "b", data=data, model=make_net,
                progress=False)
    assert first.run().iteration.tolist() == [0, 1]
    higher = Run(config(iterations=3, target_compression=float(full.compression.iloc[2]) - 1e-9), tmp_path / "b",
                 data=data, model=make_net, progress=False)
    assert higher.folder == first.folder and not higher.finished()
    pd.testing.assert_frame_equal(comparable(higher.run()), comparable(full.iloc[:3]))


def test_changed_data_make_a_new_run_and_equal_data_the_same(tmp_path):
    data = blobs()
    same = tuple(t.clone() for t in data)
    changed = tuple(t.clone() for t in data)
    changed[3][0] = (changed[3][0] + 1) % 3  # one test label
    names = [Run(config(), tmp_path, data=d, model=make_net).run_name() for d in (data, same, changed)]
    assert names[0] == names[1] != names[2]
    as_object = Dataset("blobs", *(t.clone() for t in data), num_classes=3)
    assert Run(config(), tmp_path, data=as_object, model=make_net).run_name() == names[0]


def test_a_changed_model_factory_makes_a_new_run(tmp_path):
    def wider(num_classes, input_shape):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, num_classes))

    data = blobs()
    assert Run(config(), tmp_path, data=data, model=make_net).folder != \
        Run(config(), tmp_path, data=data, model=wider).folder


def test_registered_data_identity_ignores_stopping_rules_and_default_settings(tmp_path):
    base = ExperimentConfig.of(synthetic=True, n_train=300, n_test=100, val_size=50)
    name = Run(base, tmp_path).run_name()
    assert Run(ExperimentConfig.of(synthetic=True, n_train=300, n_test=100, val_size=50, iterations=3,
                                target_compression=10), tmp_path).run_name() == name
    assert Run(ExperimentConfig.of(synthetic=True, n_train=300, n_test=100, val_size=50, seed=1),
               tmp_path).run_name() != name
    assert "dead_units" not in base.identity() and "iterations" not in base.identity()
    ablation = ExperimentConfig.of(synthetic=True, n_train=300, n_test=100, val_size=50, dead_units=False)
    assert ablation.identity()["dead_units"] is False and Run(ablation, tmp_path).run_name() != name
    assert ablation.method.relief.dead_units is False


def test_a_folder_named_by_relief_nb_0x_is_migrated(tmp_path, capsys):
    cfg = ExperimentConfig.of(synthetic=True, n_train=300, n_test=100, val_size=50, scoring_size=64, iterations=1,
                           pretrain=STAGE, retrain=STAGE)
    run = Run(cfg, tmp_path, progress=False)
    expected = run.run()
    final = torch.load(run.folder / "final.pt")
    legacy = tmp_path / cfg.legacy_run_name()
    shutil.move(run.folder, legacy)
    (legacy / "masks").mkdir()  # 0.1's layout inside the folder too: masks/iter_XX.pt
    for k in (0, 1):
        shutil.move(legacy / "iterations" / f"0{k}" / "model.pt", legacy / "masks" / f"iter_0{k}.pt")
    shutil.rmtree(legacy / "iterations")
    assert "_it1_" in legacy.name
    again = Run(cfg, tmp_path, progress=False)
    assert again.folder == run.folder and not legacy.exists()
    assert "migrated run folder" in capsys.readouterr().err
    assert again.finished() and not (again.folder / "masks").exists()
    pd.testing.assert_frame_equal(again.run(), expected)
    model = again.load_model()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in final.items())


@pytest.mark.parametrize("method", ["snip", "magact"])
def test_gradient_and_activation_baselines_run_as_experiments(tmp_path, method):
    data = blobs()
    reference = Run(config(), tmp_path, data=data, model=make_net, progress=False)
    reference.run()
    baseline = Run(config(method=method, reference=reference.experiment_name()), tmp_path, data=data, model=make_net,
                   progress=False)
    metrics = baseline.run()
    assert metrics.iteration.tolist() == [0, 1, 2]
    kept = baseline.layers().groupby("iteration").weights_remaining.sum()
    target = reference.layers().groupby("iteration").weights_remaining.sum()
    assert (kept == target).all()  # pruned to NNrelief's budget at every iteration


def test_seeds_and_iterations_are_folders(tmp_path):
    data = blobs()
    runs = [Run(config(seed=s, iterations=1), tmp_path, data=data, model=make_net, progress=False) for s in (0, 1)]
    for run in runs:
        run.run()
    assert runs[0].folder.parent == runs[1].folder.parent  # one experiment folder, a folder per seed
    assert [r.folder.name for r in runs] == ["seed_0", "seed_1"]
    assert sorted(p.name for p in (runs[0].folder / "iterations").iterdir()) == ["00", "01"]
    row = json.loads((runs[0].iteration_folder(1) / "metrics.json").read_text())
    assert row == pytest.approx(runs[0].metrics().iloc[1].to_dict())
    assert not runs[0].metrics().equals(runs[1].metrics())  # the seeds differ


def _to_01_layout(run, runs_dir, reference_legacy=None):
    """Turn a run folder into what relief_nb 0.1 left: a flat legacy name, masks/iter_XX.pt, a flat config.json."""
    cfg = run.config
    legacy = runs_dir / cfg.legacy_run_name()
    shutil.move(run.folder, legacy)
    (legacy / "masks").mkdir()
    for folder in sorted((legacy / "iterations").iterdir()):
        shutil.move(folder / "model.pt", legacy / "masks" / f"iter_{folder.name}.pt")
    shutil.rmtree(legacy / "iterations")
    flat = {k: v for k, v in cfg.flat().items() if k in ("model", "dataset", "alpha_conv", "alpha_fc", "iterations",
                                                         "pretrain", "retrain", "seed", "synthetic", "n_train",
                                                         "n_test", "val_size", "scoring_size", "method")}
    flat["reference"] = reference_legacy
    (legacy / "config.json").write_text(json.dumps(flat))
    return legacy


def test_migrate_runs_moves_0_1_folders_and_baselines_follow_their_reference(tmp_path, capsys):
    from relief_nb.experiments.migration import migrate_runs
    from relief_nb.reporting.tables import gather_results

    cfg = ExperimentConfig.of(synthetic=True, n_train=300, n_test=100, val_size=50, scoring_size=64, iterations=1,
                              pretrain=STAGE, retrain=STAGE)
    relief = Run(cfg, tmp_path, progress=False)
    relief.run()
    baseline = Run(override(cfg, method="random", reference=relief.experiment_name()), tmp_path, progress=False)
    expected = baseline.run()
    reference_legacy = _to_01_layout(relief, tmp_path).name
    _to_01_layout(baseline, tmp_path, reference_legacy)
    moved = migrate_runs(tmp_path)
    assert len(moved) == 2 and all("/seed_0" in new for _, new in moved)
    again = Run(override(cfg, method="random", reference=relief.experiment_name()), tmp_path, progress=False)
    assert again.folder == baseline.folder and again.finished()
    pd.testing.assert_frame_equal(again.run(), expected)  # read back, nothing trained
    table = gather_results(tmp_path)
    assert sorted(table.method) == ["NNrelief", "random"]
