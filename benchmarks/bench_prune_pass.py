"""One NNrelief scoring-and-pruning pass against one forward pass of the same model on the same batch.

Target (issue 2): the pass costs at most 3x a forward pass on this CPU (the authors' code: ~800x on VGG-like).
    python benchmarks/bench_prune_pass.py            # 1000 images, LeNet-300-100, LeNet-5, VGG-like, ResNet-20
    python benchmarks/bench_prune_pass.py --quick    # small batch, for the test suite
"""

from __future__ import annotations

import argparse
import copy

import torch
from common import best_time, markdown_table

from relief_nb.models import create_model, input_shape_of
from relief_nb.relief import ReliefConfig, relief_prune
from relief_nb.structure import trace_model


def measure(name: str, n: int, repeat: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name, seed=0).eval()
    x = torch.rand(n, *input_shape_of(name))
    graph = trace_model(model, input_shape_of(name))

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def prune_pass() -> None:
        m = copy.deepcopy(model)  # a fresh unpruned copy each time, so every pass does the same work
        relief_prune(m, x, ReliefConfig(0.9, 0.95), graph=trace_model(m, input_shape_of(name)))

    copy_time = best_time(lambda: copy.deepcopy(model), repeat)
    t_fwd = best_time(forward, repeat)
    t_prune = best_time(prune_pass, repeat) - copy_time
    del graph
    return {"model": name, "images": n, "forward_s": f"{t_fwd:.3f}", "prune_pass_s": f"{t_prune:.3f}",
            "ratio": f"{t_prune / t_fwd:.2f}"}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", nargs="*", default=["lenet300-100", "lenet5", "vgg-like", "resnet20"])
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args(argv)
    n, repeat = (16, 1) if args.quick else (args.images, 3)
    rows = [measure(name, n, repeat) for name in args.models]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
