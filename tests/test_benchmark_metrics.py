"""The benchmarks' C2ST (benchmarks/metrics.py), against what a two-sample test must
give: chance for draws of one distribution, near 1 for disjoint ones, and no score at
all for sets of unequal size, where chance is not 0.5."""
import numpy as np
import pytest

from benchmarks.metrics import c2st


def test_c2st_is_chance_for_one_distribution_and_near_one_for_disjoint_ones():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(600, 2))
    assert abs(c2st(rng.normal(size=(600, 2)), reference) - 0.5) < 0.06
    assert c2st(rng.normal(size=(600, 2)) + 6.0, reference) > 0.98


def test_c2st_refuses_sets_of_unequal_size():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="as many draws"):
        c2st(rng.normal(size=(400, 2)), rng.normal(size=(1000, 2)))
