"""The tuning-gain benchmark's statistics: gains paired by seed, CIs over searches."""

from __future__ import annotations

import pytest

from benchmarks.experiments.tuning_gain import (
    add_versus,
    budget_scale,
    paired,
    paired_searches,
    realised,
    split_method,
    unpaired_lines,
)


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


def test_a_budget_suffix_scales_any_method():
    assert split_method("single-x3") == ("single", 3.0)
    assert split_method("grouped-folds") == ("grouped-folds", 1.0)
    assert budget_scale("noisy-x2", 0.5) == 1.0 and budget_scale("single", 0.5) == 1.0
    with pytest.raises(SystemExit, match="single-x3"):
        split_method("singel")


def _run(method: str, test_f1: list[float], seeds: list[int], untuned: list[float] | None = None,
         **setup) -> dict:
    return {"dataset": "d", "method": method, "setup": {"seeds": seeds, **setup},
            "test_f1": {"tuned": test_f1, "untuned": untuned or [0.5] * len(test_f1)},
            "baselines": {}}


def test_runs_of_separate_invocations_pair_when_they_share_seeds():
    runs = [_run("single", [0.5, 0.6, 0.7], [1, 2, 3]),
            _run("single-x3", [0.6, 0.6, 0.9], [1, 2, 3]),
            _run("noisy", [0.9, 0.9, 0.9], [4, 5, 6])]  # other seeds: not paired
    runs[1]["baselines"] = {"unet": {"test_f1": [0.5, 0.5, 0.5]}}
    add_versus(runs)
    assert set(runs[0]["versus"]) == {"single-x3"} and runs[2]["versus"] == {}
    assert runs[1]["versus"]["single"]["test_f1"]["mean"] == pytest.approx(0.1)
    assert runs[1]["versus"]["unet"]["test_f1"]["mean"] == pytest.approx(0.2)


def test_searches_pair_search_by_search():
    # two searches of two seeds each: the CI is over the two searches' mean differences
    a = _run("a", [0.6, 0.6, 0.8, 0.8], [1, 2], searches=2)
    b = _run("b", [0.5, 0.5, 0.5, 0.5], [1, 2], searches=2)
    add_versus([a, b])
    gain = a["versus"]["b"]["test_f1"]
    assert gain["mean"] == pytest.approx(0.2) and gain["n"] == 2


def test_runs_pair_only_where_the_defaults_reproduced():
    # the same seeds trained the defaults to other scores (another CPU): no seed pairs
    a = _run("single", [0.5, 0.6, 0.7], [1, 2, 3], untuned=[0.4, 0.5, 0.6])
    b = _run("folds", [0.5, 0.5, 0.6], [1, 2, 3], untuned=[0.4, 0.55, 0.6])
    c = _run("folds-x2", [0.6, 0.6, 0.6], [1, 2, 3], untuned=[0.4, 0.55, 0.6])
    add_versus([a, b, c])
    assert set(a["versus"]) == set() and a["unpaired"] == {"folds": pytest.approx(0.05),
                                                          "folds-x2": pytest.approx(0.05)}
    assert set(c["versus"]) == {"folds"} and set(c["unpaired"]) == {"single"}
    assert "folds and single, defaults' test F1 up to 0.050 apart" in "\n".join(
        unpaired_lines([a, b, c]))


def test_a_run_recorded_before_a_metric_pairs_on_the_metrics_both_have():
    old = _run("single", [0.5, 0.6, 0.7], [1, 2, 3])
    new = _run("noisy", [0.6, 0.6, 0.9], [1, 2, 3])
    new["test_auc"] = {"tuned": [0.9, 0.9, 0.9]}  # the old run has no AUC
    add_versus([old, new])
    assert set(new["versus"]["single"]) == {"test_f1"}
    assert set(old["versus"]["noisy"]) == {"test_f1"}


def test_a_study_tuned_on_f1_best_is_realised_at_the_validation_threshold():
    assert realised({"metric": "f1_best"}) == ("val_f1_best", "test_f1_at_val_threshold")
    assert realised({"metric": "f1"}) == realised({}) == ("val_f1", "test_f1")
