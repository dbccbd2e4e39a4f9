"""Save the masks the pruning pass gives the package's own models, as a regression reference.

Run from the repository root: ``python tests/make_reference_masks.py``. The reference in
``tests/data/reference_masks.npz`` holds, per case, every ``*_mask`` of the state_dict as a bool array packed
with ``numpy.packbits`` (key ``case/state_key``) and its shape (``case/state_key:shape``).
``tests/test_reference_masks.py`` recomputes the masks and compares them exactly (same machine: the scores are
computed by the same deterministic kernels, so equality is exact).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from relief_nb.models.zoo import create_model, input_shape_of
from relief_nb.pruning.relief import ReliefConfig, relief_prune

PATH = Path(__file__).resolve().parent / "data" / "reference_masks.npz"

# (case, model, config, passes, batch size)
CASES: list[tuple[str, str, ReliefConfig, int, int]] = [
    ("lenet300-100", "lenet300-100", ReliefConfig(0.9, 0.95), 2, 64),
    ("lenet5", "lenet5", ReliefConfig(0.9, 0.95), 2, 64),
    ("lenet5-code", "lenet5", ReliefConfig.authors_code("lenet", 0.9, 0.95), 1, 64),
    ("vgg-like", "vgg-like", ReliefConfig(0.9, 0.95), 2, 24),
    ("resnet20", "resnet20", ReliefConfig(0.9, 0.95), 2, 24),
    ("resnet20-code", "resnet20", ReliefConfig.authors_code("resnet", 0.8, 0.9), 1, 24),
]


def compute_masks(case: str) -> dict[str, np.ndarray]:
    """The bool masks of one case, keyed by state_dict name."""
    _, name, config, passes, n = next(c for c in CASES if c[0] == case)
    model = create_model(name, seed=0)
    gen = torch.Generator().manual_seed(1)
    batch = torch.rand(n, *input_shape_of(name), generator=gen)
    for _ in range(passes):
        relief_prune(model, batch, config)
    return {k: (v != 0).cpu().numpy() for k, v in model.state_dict().items() if k.endswith("_mask")}


def load_reference(path: Path = PATH) -> dict[str, dict[str, np.ndarray]]:
    data = np.load(path)
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in data.files:
        if key.endswith(":shape"):
            continue
        case, _, state_key = key.partition("/")
        shape = tuple(int(s) for s in data[f"{key}:shape"])
        bits = np.unpackbits(data[key], count=int(np.prod(shape)))
        out.setdefault(case, {})[state_key] = bits.astype(bool).reshape(shape)
    return out


def main() -> None:
    arrays: dict[str, np.ndarray] = {}
    for case, *_ in CASES:
        for key, mask in compute_masks(case).items():
            arrays[f"{case}/{key}"] = np.packbits(mask.ravel())
            arrays[f"{case}/{key}:shape"] = np.array(mask.shape, dtype=np.int64)
        print(case, "done")
    PATH.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(PATH, **arrays)
    print(f"wrote {PATH} ({PATH.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
