"""Paired differences of two variants over test tiles and seeds."""

from __future__ import annotations

import numpy as np
import pytest

from hpo.study.compare_paired import paired_f1_difference, tile_confusion
from networks.metrics import confusion


def test_tile_counts_add_up_to_the_splits_confusion():
    rng = np.random.default_rng(0)
    sizes = [50, 64, 30]
    scores, labels = rng.normal(size=144), rng.random(144) < 0.2
    counts = tile_confusion(scores, labels, sizes, threshold=0.4)
    assert counts.shape == (3, 3)
    whole = confusion(scores, labels, 0.4)
    assert counts.sum(axis=0).tolist() == [whole["tp"], whole["fp"], whole["fn"]]
    with pytest.raises(ValueError, match="split changed"):
        tile_confusion(scores, labels, [50, 64], threshold=None)


def _runs(per_tile: list[tuple[int, int, int]], seeds: int = 3) -> list[np.ndarray]:
    return [np.array(per_tile)] * seeds


def test_the_same_runs_differ_by_nothing():
    a = {0: _runs([(5, 1, 1), (3, 2, 0), (0, 1, 4)])}
    assert paired_f1_difference(a, a) == {"mean": 0.0, "low": 0.0, "high": 0.0,
                                          "runs": 3, "tiles": 3}


def test_a_gain_on_every_tile_holds_and_a_gain_on_one_tile_does_not():
    tiles = [(6, 2, 2)] * 8
    base = {0: _runs(tiles)}
    everywhere = {0: _runs([(8, 1, 0)] * 8)}
    gain = paired_f1_difference(base, everywhere)
    assert gain["mean"] > 0.1 and gain["low"] > 0.1
    # the same gain in F1, all of it from one tile that holds most of the landslides:
    # another draw of test places may leave that tile out
    one = [(40, 5, 30)] + [(1, 1, 1)] * 7
    better = [(70, 5, 0)] + [(1, 1, 1)] * 7
    gain = paired_f1_difference({0: _runs(one)}, {0: _runs(better)})
    assert gain["mean"] > 0.1 and gain["low"] < 0.02 < gain["high"]


def test_folds_are_drawn_within_themselves_and_must_match():
    a = {0: _runs([(5, 1, 1)] * 4), 1: _runs([(2, 2, 2)] * 6)}
    b = {0: _runs([(6, 0, 0)] * 4), 1: _runs([(2, 2, 2)] * 6)}
    gain = paired_f1_difference(a, b)
    assert gain["runs"] == 6 and gain["tiles"] == 10 and gain["low"] > 0
    with pytest.raises(ValueError, match="folds differ"):
        paired_f1_difference(a, {0: b[0]})
    with pytest.raises(ValueError, match="fold 1"):
        paired_f1_difference(a, {0: b[0], 1: _runs([(2, 2, 2)] * 5)})


def test_a_comparisons_variants_pair_on_its_own_test_tiles(tmp_path):
    from hpo.study import load_study
    from hpo.study.compare import compare_settings, run_compare
    from hpo.study.compare_paired import paired_against, split_test_units
    from tests.hpo.cli.test_cli import TINY_STUDY, write_study
    from tests.hpo.study.test_compare import COMPARE

    spec = load_study(write_study(tmp_path, TINY_STUDY + COMPARE))
    settings = compare_settings(spec, variants=["fusion", "untuned"], trials=4, seeds=2)
    result = run_compare(spec, settings, tmp_path / "out", say=lambda _: None)
    (pair,) = paired_against(spec, settings, result.rows, "untuned", lambda *_: tmp_path / "out")
    assert (pair["split"], pair["variant"], pair["runs"]) == ("random", "fusion", 2)

    def mean_f1(variant):
        tests = [r["test"] for r in result.rows if r["variant"] == variant]
        return np.mean([(t["at_threshold"] or t["at_0.5"])["f1"] for t in tests])

    # the point estimate is the tables' own difference; the tiles are the split's
    assert pair["mean"] == pytest.approx(mean_f1("fusion") - mean_f1("untuned"), abs=1e-9)
    pixels, unit = split_test_units(spec, {"split": "random"})
    assert pair["tiles"] == len(pixels) > 1 and sum(pixels) == result.rows[0]["test"]["pixels"]
    assert unit == list(range(len(pixels)))  # a random split draws tiles
    assert pair["low"] <= pair["mean"] <= pair["high"]


def test_a_blocked_split_is_drawn_by_block(tmp_path):
    from hpo.study import ensure_scene, load_study, prepare_final_data
    from hpo.study.compare_paired import split_test_units
    from hpo.study.scene import data_section
    from tests.hpo.cli.test_cli import TINY_STUDY, write_study

    spec = load_study(write_study(tmp_path, TINY_STUDY.replace("size = 64", "size = 96")))
    ensure_scene(spec)
    blocked = {"split": "blocked", "block_size": 2}
    pixels, unit = split_test_units(spec, blocked)
    final = prepare_final_data(data_section(spec) | blocked, spec.base_dir, seed=spec.seed)
    tiles = final.test_set.tiles
    assert len(pixels) == len(tiles) and len(set(unit)) < len(unit)
    for a, ua in zip(tiles, unit, strict=True):
        for b, ub in zip(tiles, unit, strict=True):
            same_block = (a.row // 32, a.col // 32) == (b.row // 32, b.col // 32)
            assert same_block == (ua == ub)
