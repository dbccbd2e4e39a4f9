"""relief-nb compare: experiment folders that are not one grid, aggregated over their seeds and compared."""

from __future__ import annotations

import pandas as pd
import pytest

from relief_nb.cli import main
from relief_nb.experiments.presets import experiment_config
from relief_nb.experiments.run import run_experiment
from relief_nb.sweeps.compare import aggregate_experiments, compare_report


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, object]:
    """Two settings on the synthetic stand-in (checks, not results): two seeds of one, one seed of the other."""
    root = tmp_path_factory.mktemp("compare")
    out = {}
    for label, seeds, extra in (("rewound", (0, 1), {}), ("fine-tuned", (0,), {"rewind": False})):
        for seed in seeds:
            cfg = experiment_config("lenet300-mnist", "smoke", synthetic=True, iterations=2, seed=seed,
                                    target_compression=None, **extra)
            run = run_experiment(cfg, results_dir=root, progress=False, device="cpu")
        out[label] = run.folder.parent
    return out


def test_aggregate_reads_every_seed_in_the_order_given(folders):
    agg = aggregate_experiments({"fine-tuned": folders["fine-tuned"], "rewound": folders["rewound"]})
    assert list(agg.method.unique()) == ["fine-tuned", "rewound"]
    assert set(agg[agg.method == "rewound"].n_seeds) == {2} and set(agg[agg.method == "fine-tuned"].n_seeds) == {1}
    seeds = [pd.read_csv(folders["rewound"] / f"seed_{k}" / "metrics.csv") for k in (0, 1)]
    one = agg[(agg.method == "rewound") & (agg.iteration == 2)].iloc[0]
    assert one.test_error_pct_mean == pytest.approx(100 * sum(s.test_error.iloc[2] for s in seeds) / 2)


def test_report_and_cli(folders, capsys):
    report = compare_report(folders, iterations=[0, 2], compressions=[2])
    assert "Seeds per experiment: rewound: 2, fine-tuned: 1." in report
    assert "| iteration | rewound compression |" in report and "\n| 1 |" not in report  # iteration 1 left out
    assert "| experiment | 2x |" in report
    rc = main(["compare", f"a={folders['rewound']}", f"b={folders['fine-tuned'] / 'seed_0'}", "--at", "2"])
    assert rc == 0 and "| a compression |" in capsys.readouterr().out
    assert main(["compare", str(folders["rewound"]), "--at", "2"]) == 0  # a bare folder: labelled by its name
    assert f"| {folders['rewound'].name} compression |" in capsys.readouterr().out
    assert main(["compare", f"={folders['rewound']}"]) == 2
    assert "LABEL=FOLDER" in capsys.readouterr().err


def test_folder_without_runs_is_named(tmp_path):
    with pytest.raises(ValueError, match="no run with metrics there"):
        aggregate_experiments({"x": tmp_path})
