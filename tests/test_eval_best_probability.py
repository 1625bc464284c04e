"""The row maximum over predicate columns 1.. equals numpy's, whichever path computes it."""
from __future__ import annotations

import numpy as np
import pytest

from sgtool.eval.ranking import _max_by_bits, best_probability


def table(dtype, special: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    scores = rng.random((500, 7)).astype(dtype)
    scores[::7] = np.round(scores[::7], 1)  # ties
    scores[5, 3] = np.inf
    scores[8, 1:] = 0.0
    if special == "negative background":  # logits in column 0 only
        scores[:, 0] -= 0.5
    elif special == "negative":
        scores[11, 2] = -3.0
    elif special == "nan":
        scores[13, 4] = np.nan
    elif special == "minus zero":
        scores[9, 1:] = -0.0
    return scores


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", ["", "negative background", "negative", "nan", "minus zero"])
def test_best_probability_equals_numpys_maximum(dtype, special):
    scores = table(dtype, special)
    got = best_probability(scores)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, scores[:, 1:].max(axis=1).astype(np.float64))
    np.testing.assert_array_equal(best_probability(scores[::2]), scores[::2, 1:].max(axis=1))  # not contiguous


@pytest.mark.parametrize("special,by_bits", [("", True), ("negative background", False), ("nan", False),
                                             ("minus zero", False)])
def test_bit_patterns_are_used_only_for_values_in_zero_to_inf(special, by_bits):
    import torch

    assert (_max_by_bits(torch.from_numpy(table(np.float32, special))) is not None) == by_bits


def test_torch_threads_are_restored_after_the_maximum():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        best_probability(table(np.float32, ""))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
