"""Real networks as people bring them: every torchvision and timm classifier that builds here, pruned once by NNrelief
and exported, one line a model, and a summary line.

Per model (random weights, eval mode, a batch of random images at the model's input size): ``relief_prune`` with
the paper's defaults, ``export_pruned`` (whose own self-check compares the export with the masked model in float64),
the units removed, and the pass's cost against one forward of the same batch, timed in the same run (best of
interleaved rounds: a ratio, never a wall time in a test). A refusal is one line naming the op and its source line.

    python benchmarks/zoo_check.py                  # torchvision and timm, where those packages import
    python benchmarks/zoo_check.py --local          # the test zoo's plain-torch networks (any machine)
    python benchmarks/zoo_check.py --local --quick  # the same, small batches (the test suite)

On these CPU machines torchvision's build does not import beside the CPU torch (ENVIRONMENT.md), so the first form
says so and checks nothing; the GPU machines ship torchvision.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from common import interleaved_best, markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import nets  # noqa: E402  (the test zoo: plain-torch networks of every layer family)

from relief_nb import export_pruned, relief_prune  # noqa: E402
from relief_nb.core.batches import batch_size, call_model, slice_batch  # noqa: E402
from relief_nb.core.masks import mask_snapshot, restore_masks  # noqa: E402
from relief_nb.core.outputs import output_tensors  # noqa: E402
from relief_nb.graph.trace import alive_units  # noqa: E402

# one classifier per family; the families issue 24 lists
TORCHVISION = ["resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_large",
               "efficientnet_b0", "regnet_y_400mf", "densenet121", "squeezenet1_1", "googlenet", "shufflenet_v2_x1_0",
               "mnasnet1_0", "convnext_tiny", "vit_b_16", "swin_t", "vgg11_bn", "alexnet", "maxvit_t"]
TIMM = ["resnet50", "mobilenetv3_large_100", "efficientnet_b0", "regnety_002", "convnext_tiny",
        "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "mixer_b16_224", "levit_128", "deit_tiny_patch16_224",
        "ghostnet_100", "rexnet_100", "repvgg_a2", "cspresnet50", "dla34", "hrnet_w18_small"]


def local_zoo(images: int) -> dict[str, tuple[Callable[[], torch.nn.Module], object]]:
    """The test zoo: every layer family and gate, each with a batch of what its forward takes."""
    zoo = {name: (make, batch(images, 0)) for name, (make, batch) in {**nets.FAMILIES, **nets.GATES}.items()}
    for name, (make, shape, _) in nets.ZOO.items():
        zoo[name] = (make, torch.rand(images, *shape))
    zoo["vit_mha"] = (nets.ViTMHA, torch.rand(images, 1, 28, 28))
    zoo["mixer"] = (nets.Mixer, torch.rand(images, 1, 28, 28))
    zoo["swin_like"] = (nets.SwinLike, torch.rand(images, 1, 28, 28))
    zoo["senet"] = (nets.SENet, torch.rand(images, 3, 16, 16))
    return zoo


def packaged_zoo(images: int) -> dict[str, tuple[Callable[[], torch.nn.Module], object]]:
    """torchvision's and timm's classifiers, where the packages import (else a line says why not)."""
    zoo = {}
    try:
        import torchvision
        for name in TORCHVISION:
            size = 384 if name == "vit_b_16" else 224
            zoo[f"torchvision.{name}"] = ((lambda n=name: torchvision.models.get_model(n, weights=None)),
                                          torch.rand(images, 3, size, size))
    except Exception as err:  # a CUDA build beside the CPU torch fails in many ways
        print(f"torchvision does not import here ({type(err).__name__}: {str(err).splitlines()[0][:100]}): skipped")
    try:
        import timm
        for name in TIMM:
            zoo[f"timm.{name}"] = ((lambda n=name: timm.create_model(n, pretrained=False)),
                                   torch.rand(images, 3, 224, 224))
    except Exception as err:
        print(f"timm does not import here ({type(err).__name__}: {str(err).splitlines()[0][:100]}): skipped")
    return zoo


def check(name: str, make: Callable[[], torch.nn.Module], batch: object, rounds: int) -> dict:
    torch.manual_seed(0)
    try:
        model = make().eval()
    except Exception as err:
        return {"model": name, "result": f"not built: {type(err).__name__}: {str(err)[:80]}"}
    make_dense = make().eval()  # the same architecture, never pruned: the forward to compare the pass with
    dense = sum(p.numel() for p in model.parameters())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random weights: a pass may remove much, which warns
            graph = relief_prune(model, batch)
            exported = export_pruned(model, batch)
        probe = slice_batch(batch, 0, min(8, batch_size(batch)))
        with torch.no_grad():
            for a, b in zip(output_tensors(call_model(model, probe)), output_tensors(call_model(exported, probe))):
                torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    except Exception as err:
        return {"model": name, "result": "refused: " + str(err).split("; NNrelief cannot")[0][:160]}
    removed = sum(layer.out_units - int(alive_units(layer).sum()) for layer in graph.layers())
    units = sum(layer.out_units for layer in graph.layers())
    fresh = make().eval()
    snapshot = mask_snapshot(fresh)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        relief_prune(fresh, batch)  # installs the masks and traces that structure once, as a run's later passes do

        def one_pass() -> None:
            restore_masks(fresh, snapshot)
            relief_prune(fresh, batch)
        times = interleaved_best({"forward": lambda: torch.no_grad()(call_model)(make_dense, batch),
                                  "pass": one_pass}, rounds=rounds)
    return {"model": name, "result": "ok" if removed else "ok, no unit removed", "units_removed": removed,
            "units": units, "params_kept": f"{sum(p.numel() for p in exported.parameters()) / dense:.3f}",
            "kept_whole": len(graph.kept_whole), "pass_over_forward": f"{times['pass'] / times['forward']:.2f}"}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true", help="the test zoo's plain-torch networks")
    parser.add_argument("--quick", action="store_true", help="8 images, one round (for tests)")
    parser.add_argument("--images", type=int, default=64, help="batch size (the issue's ratio: 64)")
    parser.add_argument("--only", nargs="*", default=None, help="model names to check")
    args = parser.parse_args(argv)
    images, rounds = (8, 1) if args.quick else (args.images, 3)
    zoo = local_zoo(images) if args.local else packaged_zoo(images)
    if args.only:
        zoo = {k: v for k, v in zoo.items() if k in args.only}
    rows = []
    for name, (make, batch) in zoo.items():
        rows.append(check(name, make, batch, rounds))
        print(" | ".join(str(v) for v in rows[-1].values()), flush=True)
    good = sum(r["result"].startswith("ok") and r.get("units_removed", 0) > 0 for r in rows)
    if rows:
        print(markdown_table(rows))
    print(f"{good} of {len(rows)} models pruned and exported equal with units removed "
          f"({torch.__version__}, {torch.get_num_threads()} threads)")
    return rows


if __name__ == "__main__":
    main()
