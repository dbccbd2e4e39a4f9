"""The benchmark scripts run in quick mode (no timing assertions: speed is reported, not tested)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


@pytest.mark.parametrize("module", ["bench_prune_pass", "bench_mask_overhead", "bench_compact", "bench_inference",
                                    "bench_sweep", "bench_subnormals", "bench_train_loop"])
def test_benchmark_runs_in_quick_mode(module, tmp_path, capsys):
    mod = __import__(module)
    args = ["--quick"] + (["--runs", str(tmp_path)] if module == "bench_inference" else [])
    rows = mod.main(args)
    assert rows and "|" in capsys.readouterr().out


def test_compact_benchmark_over_a_runs_iterations(tmp_path, capsys):
    from relief_nb.experiments.presets import experiment_config
    from relief_nb.experiments.run import run_experiment

    cfg = experiment_config("lenet5-mnist", "smoke", synthetic=True, iterations=2, target_compression=None)
    run = run_experiment(cfg, results_dir=tmp_path, progress=False, device="cpu")
    threads = torch.get_num_threads()
    try:
        rows = __import__("bench_compact").main(["--quick", "--threads", "1", "--run", str(run.folder)])
    finally:
        torch.set_num_threads(threads)
    assert [r["iteration"] for r in rows] == [1, 2, "all 2"]
    total = rows[-1]
    assert float(total["compact_epoch_s"]) == pytest.approx(sum(float(r["compact_epoch_s"]) for r in rows[:-1]),
                                                           abs=2e-3)
    assert "1 threads" in capsys.readouterr().out


@pytest.mark.slow
def test_the_gpu_acceptance_script_dry_runs_on_the_cpu(tmp_path, capsys):
    """benchmarks/gpu_check.py is one command on a GPU machine; here its quick CPU dry run must pass end to end."""
    import gpu_check

    assert gpu_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--minutes", "0.01"]) == 0
    report = (tmp_path / "gpu_check.md").read_text()
    assert "DRY RUN ON THE CPU" in report and "**PASSED**" in report
    assert "| lenet300-100 | ok | ok | accepted | ok |" in report


def test_the_zoo_check_runs_on_the_local_zoo_and_says_when_torchvision_is_absent(capsys):
    """benchmarks/zoo_check.py: one line a model and a summary; on a machine without torchvision / timm it says
    so (this CPU machine's torchvision build does not import beside the CPU torch)."""
    zoo_check = __import__("zoo_check")
    rows = zoo_check.main(["--local", "--quick", "--only", "unet_transposed", "se_net", "vit"])
    out = capsys.readouterr().out
    assert [r["model"] for r in rows] == ["unet_transposed", "se_net", "vit"]
    assert rows[0]["result"] == "ok" and float(rows[0]["pass_over_forward"]) > 0
    assert rows[2]["result"].startswith("ok")  # no longer refused: the head split is kept whole (reported)
    assert "of 3 models pruned and exported equal with units removed" in out
    packaged = zoo_check.main(["--quick", "--only", "torchvision.alexnet", "timm.resnet50"])
    out = capsys.readouterr().out
    assert packaged or ("torchvision does not import here" in out and "timm does not import here" in out)
