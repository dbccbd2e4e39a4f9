"""One NNrelief scoring-and-pruning pass against one forward pass of the same model on the same batch.

Target (issue 2): the pass costs at most 3x a forward pass on this CPU (the authors' code: ~240-800x on VGG-like).
Two references are printed, because a single forward call over 1000 images is itself slow on a CPU (memory
traffic): ``forward_s`` is ``model(batch)`` in one call, the issue's wording; ``best_forward_s`` is the fastest
forward of the same batch, in one call or in chunks of 500, 250, 100 or 50 images: the stricter reference. Forward and
pass are timed in interleaved rounds (best of ``--repeat``), so drift in machine speed hits both alike. Both memory
layouts are measured: channels-last, in which experiments train and prune, and contiguous NCHW.

    python benchmarks/bench_prune_pass.py            # 1000 images, LeNet-300-100, LeNet-5, VGG-like, ResNet-20,
                                                     # torchvision-style ResNet-18 (CIFAR-size) and MobileNetV2
    python benchmarks/bench_prune_pass.py --quick    # small batch, for the test suite
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from common import interleaved_best, markdown_table, seconds
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import nets  # noqa: E402  (plain-torch torchvision-style models of the test suite)

from relief_nb.core.masks import mask_snapshot, restore_masks
from relief_nb.models.zoo import create_model, input_shape_of
from relief_nb.pruning.relief import ReliefConfig, relief_prune, trace_for_batch

CHUNKS = (1000, 500, 250, 100, 50)
# user-defined networks traced by torch.fx: torchvision's ResNet-18 layout (CIFAR stem) and MobileNetV2, full width
EXTRA: dict[str, tuple] = {
    "resnet18-cifar": (lambda: nets.resnet18(width=64), (3, 32, 32)),
    "mobilenetv2": (lambda: nets.MobileNetV2(width=1.0), (3, 32, 32)),
}


def build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    if name in EXTRA:
        torch.manual_seed(0)
        make, shape = EXTRA[name]
        return make(), shape
    return create_model(name, seed=0), input_shape_of(name)
LAYOUTS = ("channels_last", "contiguous")


def measure(name: str, n: int, repeat: int, config: ReliefConfig, layout: str, device: str = "cpu") -> dict:
    torch.manual_seed(0)
    model, shape = build(name)
    model.eval().to(device)
    x = torch.rand(n, *shape, device=device)
    if layout == "channels_last":  # as experiments train and prune: relief_nb.data.datasets.prepare() and Run
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def forward(chunk: int) -> None:
        for start in range(0, n, chunk):
            model(x[start:start + chunk])

    # The pass as users repeat it: the same model, its masks reset to ones each time so every pass does the same
    # work; relief_prune reuses the model's traced graph (relief_nb.graph.trace's cache), as an experiment does.
    pruned = copy.deepcopy(model)
    relief_prune(pruned, x, config)  # installs the masks; the next call traces the pruned structure once
    ones = {k: torch.ones_like(v) for k, v in mask_snapshot(pruned).items()}

    def prune_pass() -> None:
        restore_masks(pruned, ones)
        relief_prune(pruned, x, config)

    reset_time = min(seconds(lambda: restore_masks(pruned, ones)) for _ in range(3))
    # millisecond-scale models get more rounds, so that each measurement spans at least ~0.5 s in all
    rounds = max(repeat, min(50, int(0.5 / max(seconds(lambda: forward(n)), 1e-4))))
    fns = {"forward_one_call": lambda: forward(n)}
    fns.update({f"forward_chunk_{c}": (lambda c=c: forward(c)) for c in CHUNKS if c < n})
    best = interleaved_best({**fns, "pass": prune_pass}, rounds)
    t_pass = best["pass"] - reset_time
    # the first call on a model also traces it (torch.fx): a fixed cost, shown on its own
    t_trace = min(seconds(lambda: trace_for_batch(model, x, cache=False)) for _ in range(max(rounds, 5)))
    one_call = best["forward_one_call"]
    fastest = min(v for k, v in best.items() if k.startswith("forward"))
    return {"model": name, "device": device, "layout": layout, "images": n, "forward_s": f"{one_call:.3f}",
            "best_forward_s": f"{fastest:.3f}", "prune_pass_s": f"{t_pass:.3f}", "ratio": f"{t_pass / one_call:.2f}",
            "ratio_vs_best": f"{t_pass / fastest:.2f}", "trace_s": f"{t_trace:.4f}",
            "first_call_ratio_vs_best": f"{(t_pass + t_trace) / fastest:.2f}"}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 images, one round (for tests)")
    parser.add_argument("--models", nargs="*", default=None,
                        help="default: the four paper models and, unless --quick, " + ", ".join(EXTRA))
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="images per forward inside the pass (default: ReliefConfig's automatic choice)")
    parser.add_argument("--layouts", nargs="*", default=list(LAYOUTS), choices=LAYOUTS,
                        help="memory layouts of model and batch (experiments use channels_last)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args(argv)
    n, repeat = (16, 1) if args.quick else (args.images, args.repeat)
    if args.models is None:
        args.models = ["lenet300-100", "lenet5", "vgg-like", "resnet20"] + ([] if args.quick else list(EXTRA))
    config = ReliefConfig(0.9, 0.95, chunk_size=args.chunk_size)  # the paper's scores and selection rule
    rows = [measure(name, n, repeat, config, layout, args.device) for layout in args.layouts for name in args.models]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, pass chunk size {args.chunk_size or 'auto'}")
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
