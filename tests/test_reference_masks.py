"""The package's own models keep exactly the masks the pass gave them before the graph tracer (regression)."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("make_reference_masks",
                                               Path(__file__).resolve().parent / "make_reference_masks.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)


@pytest.fixture(scope="module")
def reference():
    return ref.load_reference()


@pytest.mark.parametrize("case", [c[0] for c in ref.CASES])
def test_masks_equal_the_saved_reference(case, reference):
    expected = reference[case]
    got = ref.compute_masks(case)
    assert got.keys() == expected.keys()
    for key, mask in expected.items():
        assert got[key].shape == mask.shape, key
        diff = int((got[key] != mask).sum())
        assert diff == 0, f"{case}: {key} differs in {diff} of {mask.size} entries"
