"""The benchmark scripts run in quick mode (no timing assertions: speed is reported, not tested)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


@pytest.mark.parametrize("module", ["bench_prune_pass", "bench_mask_overhead", "bench_compact", "bench_inference",
                                    "bench_sweep"])
def test_benchmark_runs_in_quick_mode(module, tmp_path, capsys):
    mod = __import__(module)
    args = ["--quick"] + (["--runs", str(tmp_path)] if module == "bench_inference" else [])
    rows = mod.main(args)
    assert rows and "|" in capsys.readouterr().out
