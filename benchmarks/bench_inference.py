"""CPU inference of the exported (physically smaller) model against the dense one, at batch 1 and 256.

Uses the pruned LeNets of the README's real MNIST runs when their folders exist (``--runs results/runs``);
otherwise, and in ``--quick`` mode, models pruned by three NNrelief passes without retraining (labelled so).
    python benchmarks/bench_inference.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import RUNS, interleaved_best, markdown_table, pruned_model

from relief_nb.graph.export import export_pruned, saved_size_bytes
from relief_nb.models.zoo import create_model, input_shape_of


def measure(name: str, runs: Path, repeat: int, calls: int) -> list[dict]:
    masked, source = pruned_model(name, runs)
    masked.eval()
    dense = create_model(name, seed=0).eval()
    exported = export_pruned(masked, input_shape_of(name))
    sparse = export_pruned(masked, input_shape_of(name), sparse_linear=True)
    rows = []
    for batch in (1, 256):
        x = torch.rand(batch, *input_shape_of(name))

        def calls_of(model, x=x):
            def go():
                with torch.inference_mode():
                    for _ in range(calls):
                        model(x)
            return go

        models = {"dense": dense, "exported": exported, "exported_csr": sparse}
        t = {k: v / calls for k, v in interleaved_best({k: calls_of(m) for k, m in models.items()}, repeat).items()}
        rows.append({"model": name, "batch": batch, "dense_ms": f"{1e3 * t['dense']:.3f}",
                     "exported_ms": f"{1e3 * t['exported']:.3f}", "speedup": f"{t['dense'] / t['exported']:.2f}x",
                     "csr_ms": f"{1e3 * t['exported_csr']:.3f}",
                     "throughput_exported_img_s": f"{batch / t['exported']:.0f}",
                     "size_kb_dense": saved_size_bytes(dense) // 1024,
                     "size_kb_exported": saved_size_bytes(exported) // 1024,
                     "source": source})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=Path, default=RUNS)
    args = parser.parse_args(argv)
    repeat, calls = (1, 2) if args.quick else (5, 200)
    rows = [r for name in ("lenet300-100", "lenet5") for r in measure(name, args.runs, repeat, calls)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
