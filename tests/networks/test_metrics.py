import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, jaccard_score, roc_auc_score

from networks import SegmentationMeter, roc_auc, segmentation_metrics
from networks.metrics import best_f1_threshold


def _sklearn(prob, target):
    pred = prob > 0.5
    return {
        "miou": jaccard_score(target, pred, average="macro", zero_division=0),
        "f1": f1_score(target, pred, zero_division=0),
        "auc": roc_auc_score(target, prob),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_sklearn_on_random_inputs_with_mask(seed):
    rng = np.random.default_rng(seed)
    prob = rng.random((4, 17, 19))
    target = (rng.random((4, 17, 19)) < 0.2 + 0.5 * prob).astype(np.int64)
    valid = rng.random((4, 17, 19)) > 0.1
    got = segmentation_metrics(prob, target, valid)
    want = _sklearn(prob[valid], target[valid])
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-6)


def test_ties_handled_like_sklearn():
    rng = np.random.default_rng(3)
    prob = rng.integers(0, 5, 2000) / 4.0  # few distinct values: many ties
    target = rng.random(2000) < 0.3
    assert roc_auc(prob, target) == pytest.approx(roc_auc_score(target, prob), abs=1e-12)
    got = segmentation_metrics(prob, target)
    assert got["miou"] == pytest.approx(_sklearn(prob, target)["miou"], abs=1e-12)


def test_meter_over_batches_equals_one_shot_and_accepts_tensors():
    rng = np.random.default_rng(4)
    prob = rng.random((6, 9, 11)).astype(np.float32)
    target = rng.random((6, 9, 11)) < prob
    valid = rng.random((6, 9, 11)) > 0.2
    meter = SegmentationMeter()
    for i in range(0, 6, 2):
        meter.update(
            torch.from_numpy(prob[i : i + 2]),
            torch.from_numpy(target[i : i + 2]),
            torch.from_numpy(valid[i : i + 2]),
        )
    assert meter.n_pixels == int(valid.sum())
    got = meter.compute()
    want = _sklearn(prob[valid], target[valid])
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-6)
    meter.reset()
    assert meter.n_pixels == 0


def test_one_class_gives_auc_none_and_finite_scores():
    prob = np.array([0.1, 0.7, 0.2, 0.4])
    target = np.zeros(4, dtype=int)
    got = segmentation_metrics(prob, target)
    assert got["auc"] is None
    assert np.isfinite(got["miou"]) and np.isfinite(got["f1"])
    assert got["miou"] == pytest.approx(jaccard_score(target, prob > 0.5, average="macro"))
    assert got["f1"] == 0.0
    all_background = segmentation_metrics(np.zeros(3), np.zeros(3))
    assert all_background == {
        "miou": 1.0, "f1": 0.0, "auc": None, "f1_best": 0.0, "threshold": 0.5
    }


@pytest.mark.parametrize("seed", range(4))
def test_best_threshold_maximizes_f1_like_sklearn(seed):
    rng = np.random.default_rng(seed)
    target = rng.random(400) < 0.1
    prob = np.clip(0.3 * target + rng.random(400) * 0.7, 0, 1).round(2)  # with ties
    got = segmentation_metrics(prob, target)
    brute = max(f1_score(target, prob >= t) for t in np.unique(prob))
    assert got["f1_best"] == pytest.approx(brute, abs=1e-9)
    assert f1_score(target, prob > got["threshold"]) == pytest.approx(brute, abs=1e-9)
    assert got["f1_best"] >= got["f1"]


def test_meter_at_a_threshold_chosen_elsewhere():
    prob = np.array([0.9, 0.3, 0.35, 0.1, 0.6])
    target = np.array([1, 1, 0, 0, 0])
    meter = SegmentationMeter()
    meter.update(prob, target)
    at = meter.at(0.2)
    assert at["f1"] == pytest.approx(f1_score(target, prob > 0.2))
    assert at["miou"] == pytest.approx(jaccard_score(target, prob > 0.2, average="macro"))
    assert meter.at(0.5)["f1"] == meter.compute()["f1"]


def test_invalid_pixels_are_ignored():
    prob = np.array([0.9, 0.1, 0.9])
    target = np.array([1, 0, 0])
    got = segmentation_metrics(prob, target, valid=np.array([True, True, False]))
    assert got == {"miou": 1.0, "f1": 1.0, "auc": 1.0, "f1_best": 1.0, "threshold": 0.5}


@pytest.mark.parametrize(
    ("prob", "target", "valid", "match"),
    [
        (np.zeros(3), np.zeros(4), None, "shape"),
        (np.zeros(3), np.array([0, 2, 1]), None, "0 and 1"),
        (np.array([0.1, np.nan]), np.zeros(2), None, "NaN"),
        (np.zeros(2), np.zeros(2), np.zeros(2, dtype=bool), "no valid"),
    ],
)
def test_bad_inputs_raise(prob, target, valid, match):
    with pytest.raises(ValueError, match=match):
        segmentation_metrics(prob, target, valid)


def test_log_odds_keep_the_ranking_that_saturated_probabilities_lose():
    """Boosted trees reach log-odds of thousands: float32 probabilities are all 0 or 1."""
    rng = np.random.default_rng(0)
    target = rng.random(2000) < 0.2
    log_odds = np.where(target, 400.0, -400.0) + rng.normal(0, 300, 2000)
    prob = torch.sigmoid(torch.from_numpy(log_odds).float())
    assert torch.isin(prob, torch.tensor([0.0, 1.0])).float().mean() > 0.9
    saturated, ranked = SegmentationMeter(), SegmentationMeter()
    saturated.update(prob, target)
    ranked.update_log_odds(torch.from_numpy(log_odds).float(), target)
    got, lost = ranked.compute(), saturated.compute()
    assert got["auc"] == pytest.approx(roc_auc_score(target, log_odds), abs=1e-6)
    assert got["auc"] > lost["auc"] + 0.02
    # The same decisions at 0.5, whichever way the batch came in.
    assert got["f1"] == lost["f1"] == pytest.approx(f1_score(target, log_odds > 0))
    # The best cut lies among saturated scores: the threshold stays a usable probability.
    assert 0.0 < got["threshold"] < 1.0
    assert ranked.at(got["threshold"])["f1"] <= got["f1_best"]


def test_log_odds_and_probabilities_agree_where_nothing_saturates():
    rng = np.random.default_rng(1)
    target = rng.random(500) < 0.3
    log_odds = rng.normal(0, 2, 500) + 1.5 * target
    from_prob, from_odds = SegmentationMeter(prob_dtype=np.float64), SegmentationMeter(
        prob_dtype=np.float64)
    from_prob.update(1 / (1 + np.exp(-log_odds)), target)
    from_odds.update_log_odds(log_odds, target)
    a, b = from_prob.compute(), from_odds.compute()
    for key in ("miou", "f1", "auc", "f1_best", "threshold"):
        assert a[key] == pytest.approx(b[key], abs=1e-9)
    prob = 1 / (1 + np.exp(-log_odds))
    assert f1_score(target, prob > b["threshold"]) == pytest.approx(b["f1_best"], abs=1e-9)
    with pytest.raises(ValueError, match="NaN"):
        from_odds.update_log_odds(np.array([np.nan]), np.array([1]))


def test_a_cut_between_infinite_scores_is_the_neutral_one():
    # probabilities of exactly 1 and 0 (hard masks, or saturated models) are +-inf log-odds
    f1, threshold = best_f1_threshold(np.array([np.inf, np.inf, -np.inf]), np.array([1, 1, 0]))
    assert f1 == 1.0 and threshold == 0.5
    f1, threshold = best_f1_threshold(np.array([np.inf, 3.0, -np.inf]), np.array([1, 0, 0]))
    assert f1 == 1.0 and 0.999 < threshold < 1.0  # halfway between +inf and 3 is above 3


def test_pooled_threshold_keeps_a_cut_that_holds_on_every_run():
    from networks.metrics import THRESHOLD_GRID, pooled_threshold

    grid = np.asarray(THRESHOLD_GRID)
    # Every run peaks at 0.8: F1 0.7 there against 0.5 at the default cut.
    curves = [list(0.7 - 2 * (grid - 0.8) ** 2 + 0.01 * k) for k in range(4)]
    decided = pooled_threshold(curves)
    assert decided["kept"] and abs(decided["threshold"] - 0.8) < 0.05
    assert decided["gain"] > 0.1


def test_pooled_threshold_falls_back_to_half_when_the_peak_is_noise():
    from networks.metrics import THRESHOLD_GRID, pooled_threshold

    rng = np.random.default_rng(0)
    # Flat curves plus noise: each run's peak is somewhere else, and none holds out of it.
    curves = [list(0.6 + 0.02 * rng.standard_normal(len(THRESHOLD_GRID))) for _ in range(5)]
    decided = pooled_threshold(curves)
    assert not decided["kept"] and decided["threshold"] == 0.5
    single = pooled_threshold(curves[:1])
    assert single["threshold"] == 0.5 and single["gain"] is None


def test_threshold_of_is_the_f1_best_cut_and_none_without_landslides():
    from networks.metrics import threshold_of

    rng = np.random.default_rng(5)
    label = rng.random(300) < 0.2
    scores = rng.normal(0, 1, 300) + 1.5 * label
    threshold = threshold_of(scores, label)
    prob = 1 / (1 + np.exp(-scores))
    brute = max(f1_score(label, prob >= t) for t in np.unique(prob))
    assert f1_score(label, prob > threshold) == pytest.approx(brute, abs=1e-9)
    assert threshold_of(scores, np.zeros(300, bool)) is None


def test_validation_threshold_reads_the_history_or_its_last_epoch():
    from types import SimpleNamespace

    from networks.metrics import validation_threshold

    assert validation_threshold(SimpleNamespace(threshold=0.3, epochs=[])) == 0.3
    old = SimpleNamespace(threshold=None, epochs=[{"threshold": 0.2}, {"threshold": 0.7}])
    assert validation_threshold(old) == 0.7
    for bad in (0.0, 1.0, "0.5", None):
        assert validation_threshold(SimpleNamespace(threshold=bad, epochs=[])) is None


def test_mean_probability_log_odds_is_the_log_odds_of_the_mean_probability():
    from networks.metrics import mean_probability_log_odds

    rng = np.random.default_rng(6)
    runs = [rng.normal(0, 3, 50) for _ in range(3)]
    mean = np.mean([1 / (1 + np.exp(-r)) for r in runs], axis=0)
    got = mean_probability_log_odds(runs)
    assert np.allclose(got, np.log(mean / (1 - mean)), atol=1e-9)
    # where every run is confident, the mean stays ranked instead of rounding to 1
    confident = mean_probability_log_odds([np.array([800.0, 900.0]), np.array([700.0, 950.0])])
    assert np.isfinite(confident).all() and confident[1] > confident[0]


def test_roc_points_lie_on_sklearns_curve():
    from sklearn.metrics import roc_curve

    from networks.metrics import roc_points

    rng = np.random.default_rng(7)
    label = rng.random(5000) < 0.3
    scores = (rng.normal(0, 1, 5000) + label).round(1)  # with ties
    fpr, tpr, _ = roc_curve(label, scores, drop_intermediate=False)
    full = roc_points(scores, label, n=10**6)
    assert np.allclose(full["fpr"], fpr) and np.allclose(full["tpr"], tpr)
    thin = roc_points(scores, label, n=20)
    assert len(thin["fpr"]) == 20
    assert (thin["fpr"][0], thin["tpr"][0]) == (0.0, 0.0)
    assert (thin["fpr"][-1], thin["tpr"][-1]) == (1.0, 1.0)
    assert set(zip(thin["fpr"], thin["tpr"], strict=True)) <= set(
        zip(full["fpr"], full["tpr"], strict=True))
    assert roc_points(scores, np.zeros(5000, bool)) is None


def test_score_log_odds_matches_sklearn_at_half_and_at_the_threshold():
    from networks.metrics import score_log_odds

    rng = np.random.default_rng(8)
    label = rng.random(1000) < 0.25
    scores = rng.normal(0, 2, 1000) + 2 * label
    got = score_log_odds(scores, label, 0.3)
    assert got["pixels"] == 1000 and got["landslide_pixels"] == int(label.sum())
    for key, cut in (("at_0.5", 0.0), ("at_threshold", np.log(0.3 / 0.7))):
        pred = scores > cut
        assert got[key]["f1"] == pytest.approx(f1_score(label, pred))
        assert got[key]["miou"] == pytest.approx(jaccard_score(label, pred, average="macro"))
        assert got[key]["auc"] == pytest.approx(roc_auc_score(label, scores))
        c = got[key]["confusion"]
        assert c["tp"] == int((pred & label).sum()) and c["fp"] == int((pred & ~label).sum())
        assert sum(c.values()) == 1000
    assert got["at_threshold"]["threshold"] == 0.3
    assert score_log_odds(scores, label, None)["at_threshold"] is None
    assert len(got["roc"]["fpr"]) <= 200
