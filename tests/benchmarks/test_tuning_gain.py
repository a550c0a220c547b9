"""The tuning-gain benchmark's statistics: gains paired by seed, CIs over searches."""

from __future__ import annotations

import pytest

from benchmarks.experiments.tuning_gain import paired, paired_searches


def test_one_search_pairs_by_seed():
    tuned, base = [0.6, 0.7, 0.65], [0.5, 0.62, 0.52]
    assert paired_searches([tuned], [base]) == paired(tuned, base)


def test_several_searches_take_their_ci_over_the_searches():
    # Within a search the seeds agree (+0.1 each); the searches do not (+0.1, -0.1, +0.3):
    # a CI over the 9 seeds would be far too narrow, one over the 3 searches is not.
    base = [[0.5, 0.5, 0.5]] * 3
    tuned = [[0.6] * 3, [0.4] * 3, [0.8] * 3]
    gain = paired_searches(tuned, base)
    assert gain["mean"] == pytest.approx(0.1) and gain["n"] == 3 and gain["seeds"] == 3
    # sd 0.2 over 3 searches: half-width 4.303 * 0.2 / sqrt(3)
    assert gain["high"] - gain["mean"] == pytest.approx(4.303 * 0.2 / 3 ** 0.5)
    pooled = paired([v for t in tuned for v in t], [v for b in base for v in b])
    assert gain["high"] - gain["low"] > pooled["high"] - pooled["low"]
