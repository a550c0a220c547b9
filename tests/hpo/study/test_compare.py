"""``hpo compare``: variants tuned alike, trained with several seeds, scored on test."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from hpo.cli.main import main
from hpo.engine.budget import plan_stages, split_evaluations
from hpo.engine.errors import SpecError
from hpo.study import load_study
from hpo.study.compare import compare_settings, run_compare, variant_spec, variant_stages
from hpo.study.compare_tables import markdown
from hpo.study.variants import VARIANTS
from tests.hpo.cli.test_cli import TINY_STUDY, write_study

COMPARE = """
[compare]
variants = ["fusion", "segnet", "untuned"]
trials = 4
seeds = 2
splits = ["random"]
"""

FIVE_STAGES = TINY_STUDY + """
[[stages]]
name = "dbn"
n_random = 2
n_bayes = 1
[stages.params]
"dbn.pretrain_lr" = { type = "float", low = 1e-3, high = 1e-1, log = true, default = 1e-2 }
"dbn.cd_k" = { type = "int", low = 1, high = 3, default = 1 }

[[stages]]
name = "head"
n_random = 2
n_bayes = 1
[stages.params]
"head.dropout" = { type = "float", low = 0.0, high = 0.5, default = 0.1 }
"""


@pytest.fixture
def spec(tmp_path):
    return load_study(write_study(tmp_path, FIVE_STAGES + COMPARE))


def test_budget_split_spends_exactly_the_evaluations():
    for total in (8, 20, 33, 60):
        dims = [2, 1, 3, 4]
        evals, refine = split_evaluations(total, dims)
        assert sum(evals) == total and refine == 0 and min(evals) >= 2
        stages, _ = plan_stages(total, dims)
        # Later stages' budgets include the free copied incumbent.
        assert sum(s.budget for s in stages) == total + len(dims) - 1
        pairs = zip(stages, evals, strict=True)
        assert all(s.n_random >= 1 and s.evaluations == e for s, e in pairs)
    with pytest.raises(ValueError, match="too few"):
        split_evaluations(5, [1, 1, 1])


def test_variants_tune_only_the_parameters_that_apply(spec):
    names = lambda v: {n for s in variant_stages(spec, VARIANTS[v], 12) for n in s.params}  # noqa: E731
    assert names("fusion") == {"optim.lr", "dcnn.width", "dbn.pretrain_lr", "dbn.cd_k",
                                "head.dropout"}
    assert names("segnet") == {"optim.lr", "head.dropout"}
    assert names("no-dbn") == {"optim.lr", "dcnn.width", "head.dropout"}
    assert names("no-pretrain") == {"optim.lr", "dcnn.width", "head.dropout"}
    assert names("hgb") >= {"boost.learning_rate", "boost.windows"}
    for v in ("fusion", "segnet", "hgb"):
        stages = variant_stages(spec, VARIANTS[v], 12)
        evaluations = sum(s.n_random + s.n_bayes for s in stages) - (len(stages) - 1)
        assert evaluations == 12, v  # every variant gets the same number of evaluations


def test_variant_spec_fixes_its_part_and_keeps_fusion_keys_from_baselines(spec):
    no_dbn = variant_spec(spec, VARIANTS["no-dbn"], 8, {"split": "blocked"}, "blocked")
    assert no_dbn.model.fixed["dbn.enabled"] is False
    assert no_dbn.data["split"] == "blocked" and no_dbn.name == "tiny-cmp-blocked-no-dbn"
    segnet = variant_spec(spec, VARIANTS["segnet"], 8, {}, "study")
    assert segnet.model.name == "segnet"
    assert all(k.startswith(("optim.", "head.")) for k in segnet.model.fixed)
    optical = variant_spec(spec, VARIANTS["optical-only"], 8, {}, "study")
    assert optical.data["select"] == "optical"


def test_compare_epochs_lets_every_network_variant_tune_its_training_length(spec):
    # Under-trained baselines were a defect of the comparison (issue 19): at the study's
    # fixed epochs DeepLabV3 and PSPNet scored test F1 0.04-0.07 on the synthetic scene.
    def epochs_param(name):
        stages = variant_stages(spec, VARIANTS[name], 12, (2, 8))
        found = [(s.name, s.params["optim.epochs"]) for s in stages
                 if "optim.epochs" in s.params]
        return stages, found

    for name in ("fusion", "segnet", "no-dbn"):
        stages, found = epochs_param(name)
        assert len(found) == 1 and found[0][0] == "optim", name  # beside optim.lr
        param = found[0][1]
        assert (param.low, param.high, param.log) == (2, 8, True)
        assert param.default == 2  # the study's 1 lies outside: the range's low end
        evaluations = sum(s.n_random + s.n_bayes for s in stages) - (len(stages) - 1)
        assert evaluations == 12, name  # the same budget as without it
    _, found = epochs_param("hgb")
    assert found == []  # the boosting floor has no epochs
    # the study's own epochs, where in range, are the untuned trial's
    inside = variant_stages(spec, VARIANTS["segnet"], 12, (1, 8))
    assert [s.params["optim.epochs"].default for s in inside if "optim.epochs" in s.params] == [1]
    # without the setting nothing changes
    assert all("optim.epochs" not in s.params
               for s in variant_stages(spec, VARIANTS["segnet"], 12))


def test_compare_epochs_setting_is_read_and_recorded(tmp_path):
    spec = load_study(write_study(tmp_path, TINY_STUDY + "\n[compare]\nepochs = [2, 6]\n"))
    settings = compare_settings(spec)
    assert settings.epochs == (2, 6) and settings.to_dict()["epochs"] == [2, 6]
    vspec = variant_spec(spec, VARIANTS["unet"], 8, {}, "study", settings.epochs)
    assert any("optim.epochs" in s.params for s in vspec.stages)
    # comparisons stored before the key existed keep their settings (and so their key)
    assert "epochs" not in compare_settings(load_study(write_study(tmp_path, TINY_STUDY))).to_dict()


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("epochs = [8, 2]", "compare.epochs"),
        ("epochs = 24", "compare.epochs"),
        ('variants = ["fusion", "segnett"]', "compare.variants"),
        ("trials = 0", "compare.trials"),
        ('seeds = "3"', "compare.seeds"),
        ("splits = 3", "compare.splits"),
        ("folds = 1", "compare.folds"),
        ("ensemble = 1", "compare.ensemble"),
    ],
)
def test_bad_compare_settings_name_the_key(tmp_path, table, key):
    spec = load_study(write_study(tmp_path, TINY_STUDY + "\n[compare]\n" + table + "\n"))
    with pytest.raises(SpecError) as err:
        compare_settings(spec)
    assert err.value.key == key and "tiny.toml" in str(err.value)


def test_unknown_compare_key_is_rejected_with_the_nearest(tmp_path):
    with pytest.raises(SpecError, match="trials"):
        load_study(write_study(tmp_path, TINY_STUDY + "\n[compare]\ntrails = 3\n"))


def test_presets_and_arguments_override_the_table(spec):
    assert compare_settings(spec).trials == 4
    assert compare_settings(spec, quick=True).seeds == 1
    assert compare_settings(spec, full=True).trials == 60
    assert compare_settings(spec, trials=9, variants=["hgb"]).variants == ("hgb",)
    with pytest.raises(SpecError, match="exclude"):
        compare_settings(spec, quick=True, full=True)


def _not_again(*args, **kwargs):
    raise AssertionError("nothing new was run, so nothing is paired again")


def test_compare_tunes_trains_scores_and_resumes(tmp_path, monkeypatch):
    spec = load_study(write_study(tmp_path, TINY_STUDY + COMPARE))
    settings = compare_settings(spec)
    said: list[str] = []
    result = run_compare(spec, settings, tmp_path / "out", say=said.append)
    assert len(result.rows) == 3 * 2
    assert {(r["variant"], r["seed"]) for r in result.rows} == {
        (v, s) for v in ("fusion", "segnet", "untuned") for s in (0, 1)
    }
    for row in result.rows:
        for key in ("miou", "f1", "auc"):
            assert key in row["test"]["at_0.5"]
    untuned = [r for r in result.rows if r["variant"] == "untuned"]
    assert untuned[0]["params"] == {"optim.lr": 1e-3, "dcnn.width": 4}  # the study's defaults
    # Tuned variants spent exactly their evaluations; the untuned one ran no search.
    assert {s["variant"]: s["evaluations"] for s in result.searches} == {
        "fusion": 4, "segnet": 4,
    }
    stored = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert len(stored["summary"]) == 3 and stored["summary"][0]["runs"] == 2
    table = (tmp_path / "out" / "compare.md").read_text()
    assert "| fusion |" in table and "| untuned |" in table
    # every variant against fusion, on the same test tiles and seeds
    assert {(p["variant"], p["reference"]) for p in stored["paired"]} == {
        ("segnet", "fusion"), ("untuned", "fusion")}
    assert "paired by test tile and seed" in table
    # A rerun finds everything done: no tuning, no training, no pairing again.
    again: list[str] = []
    monkeypatch.setattr("hpo.study.compare_paired.paired_against", _not_again)
    rerun = run_compare(spec, settings, tmp_path / "out", say=again.append)
    assert rerun.rows == result.rows
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["paired"] == stored[
        "paired"]
    assert not [line for line in again if "tuning" in line or "seed" in line]
    # A run killed after its last seed gets its ensemble on the rerun, without training.
    stored["ensembles"] = []
    (tmp_path / "out" / "compare.json").write_text(json.dumps(stored))
    again = []
    rerun = run_compare(spec, settings, tmp_path / "out", say=again.append)
    assert rerun.ensembles == result.ensembles
    assert not [line for line in again if "seed 0" in line or "seed 1" in line]
    # Other settings in the same folder are refused, not mixed in.
    with pytest.raises(SpecError, match="--fresh"):
        run_compare(spec, compare_settings(spec, trials=6), tmp_path / "out")


def test_seed_ensembles_average_the_runs_probabilities(tmp_path):
    from sklearn.metrics import f1_score, roc_auc_score

    from networks.metrics import best_f1_threshold, log_odds

    spec = load_study(write_study(tmp_path, TINY_STUDY + COMPARE))
    settings = compare_settings(spec, variants=["untuned"], seeds=3)
    result = run_compare(spec, settings, tmp_path / "out", say=lambda _: None)
    (ensemble,) = result.ensembles
    assert ensemble["variant"] == "untuned" and ensemble["members"] == [0, 1, 2]
    runs = [np.load(tmp_path / "out" / "probs" / f"random-untuned-s{s}.npz") for s in range(3)]

    def mean_prob(key):
        return np.mean([1 / (1 + np.exp(-r[key].astype(np.float64))) for r in runs], axis=0)

    test_prob, val_prob = mean_prob("test_log_odds"), mean_prob("val_log_odds")
    # The members differ (seeds), and the ensemble scores their mean, not one of them.
    assert not np.allclose(runs[0]["test_log_odds"], runs[1]["test_log_odds"])
    assert ensemble["test"]["at_0.5"]["auc"] == pytest.approx(
        roc_auc_score(runs[0]["test_label"], test_prob), abs=1e-6)
    f1_best, _ = best_f1_threshold(log_odds(val_prob), runs[0]["val_label"])
    val_label = runs[0]["val_label"]
    assert f1_score(val_label, val_prob > ensemble["threshold"]) == pytest.approx(f1_best)
    # Each member's own row scores its own file.
    for row, run in zip(sorted(result.rows, key=lambda r: r["seed"]), runs, strict=True):
        assert row["test"]["at_0.5"]["auc"] == pytest.approx(
            roc_auc_score(run["test_label"], run["test_log_odds"]), abs=1e-6)
    table = (tmp_path / "out" / "compare.md").read_text()
    assert "Seed ensembles" in table and table.count("| untuned |") == 2


@pytest.mark.parametrize("extra", ["", "ensemble = false\n"])
def test_one_seed_or_ensemble_off_makes_no_ensemble(tmp_path, extra):
    spec = load_study(write_study(tmp_path, TINY_STUDY + COMPARE + extra))
    settings = compare_settings(spec, variants=["untuned"], seeds=1 if not extra else 2)
    result = run_compare(spec, settings, tmp_path / "out", say=lambda _: None)
    assert result.ensembles == [] and len(result.rows) == settings.seeds
    assert "Seed ensembles" not in (tmp_path / "out" / "compare.md").read_text()
    if extra:  # off: no probabilities kept either
        assert not (tmp_path / "out" / "probs").exists()


def test_variants_that_do_not_apply_are_skipped_with_a_reason(tmp_path):
    one_date = TINY_STUDY.replace("n_dates = 2", "n_dates = 1")
    spec = load_study(write_study(tmp_path, one_date))
    settings = compare_settings(spec, variants=["no-temporal"], trials=4, seeds=1)
    result = run_compare(spec, settings, tmp_path / "out", say=lambda _: None)
    assert result.rows == [] and result.skipped == {"no-temporal": "the data have one date"}
    assert "no-temporal: not run (the data have one date)" in (
        tmp_path / "out" / "compare.md"
    ).read_text()


def test_cli_compare_prints_the_table(tmp_path, capsys):
    study = write_study(tmp_path, TINY_STUDY)
    out = tmp_path / "cmp"
    code = main(["compare", str(study), "--variants", "untuned", "--seeds", "1",
                 "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| untuned |" in printed and (out / "compare.json").is_file()


def test_compare_shows_progress_and_records_the_test_shift(tmp_path):
    # Regression (issue 21): 13 silent minutes while a model trained; no estimate; the
    # out-of-training-range shares that `hpo train` records were missing.
    spec = load_study(write_study(tmp_path, TINY_STUDY + COMPARE))
    settings = compare_settings(spec, variants=["fusion", "untuned"], seeds=2)
    said: list[str] = []
    result = run_compare(spec, settings, tmp_path / "out", say=said.append)
    # up front: what is to run, in model trainings (4 evaluations + 2 x 2 seeds)
    plan = [i for i, line in enumerate(said) if line.startswith("plan:")]
    assert plan and "8 model trainings" in said[plan[0]], said
    # every tuning trial and every seed says where the comparison is, with an ETA
    trials = [line for line in said if "fusion: trial" in line]
    assert plan[0] < said.index(trials[0])
    assert len(trials) == 4 and "trial 4/4" in trials[-1], said
    assert all("ETA" in line for line in trials), trials
    for variant in ("fusion", "untuned"):
        for seed in (0, 1):
            assert any(f"{variant} seed {seed}: training" in line for line in said), said
    assert "8/8 trainings" in [line for line in said if "seed 1:" in line][-1]
    for row in result.rows:
        shares = row["test_outside_training"]
        assert shares and all(0.0 <= v <= 1.0 for v in shares.values())
        assert set(shares) <= set(row.get("source_names") or shares)
    stored = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert all("test_outside_training" in r for r in stored["rows"])
    # a rerun with timings stored estimates the time up front
    stored["rows"] = [r for r in stored["rows"] if r["variant"] != "untuned"]
    (tmp_path / "out" / "compare.json").write_text(json.dumps(stored))
    again: list[str] = []
    run_compare(spec, settings, tmp_path / "out", say=again.append)
    plan = next(line for line in again if line.startswith("plan:"))
    assert "2 model trainings" in plan and "about" in plan, plan


def test_cli_compare_interrupted_prints_the_resume_command(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from tests.hpo.cli.test_cli import ROOT
    from tests.hpo.conftest import interruptible

    study = write_study(tmp_path, TINY_STUDY + COMPARE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", "compare", str(study), "--variants", "fusion",
         "-o", str(tmp_path / "cmp")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
        preexec_fn=interruptible,
    )
    try:
        for line in proc.stdout:
            if "fusion: trial 1/" in line:
                proc.send_signal(signal.SIGINT)
                break
        else:
            pytest.fail(f"no trial finished: {proc.stderr.read()}")
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert f"Resume with: hpo compare {study}" in err and "Traceback" not in err, err


def _row(variant: str, f1: float, seed: int = 0) -> dict:
    scores = {"miou": f1, "f1": f1, "auc": 0.9}
    return {"split": "blocked", "variant": variant, "seed": seed,
            "test": {"at_0.5": scores, "at_threshold": scores}}


def test_compare_md_flags_networks_that_learned_little():
    state = {"study": "s", "settings": {"trials": 4, "seeds": 1, "folds": 0},
             "searches": [], "skipped": {}, "rows": [
                 _row("fusion", 0.75), _row("segnet", 0.09), _row("unet", 0.63),
                 _row("hgb", 0.05)]}
    text = markdown(state)
    flagged = [line for line in text.splitlines() if line.startswith("Learned little")]
    assert len(flagged) == 1
    # a third of fusion's 0.75 is 0.25: segnet is flagged, unet is not, and the boosting
    # floor (no epochs, no downsampling) is never
    assert "segnet (0.090)" in flagged[0] and "fusion's test F1 (0.750)" in flagged[0]
    assert "unet" not in flagged[0] and "hgb" not in flagged[0]
    state["rows"] = [_row("fusion", 0.75), _row("unet", 0.63)]
    assert "Learned little" not in markdown(state)


def test_a_baseline_keeps_its_own_groups_fixed_keys(spec):
    # compare-synthetic fixes segnet.levels = 2 and backbone.stride = 4 for its 32-px
    # tiles; fusion-only keys go.
    fixed = {**spec.model.fixed, "segnet.levels": 2, "backbone.stride": 4,
             "temporal.conv_layers": 1}
    study = dataclasses.replace(spec, model=dataclasses.replace(spec.model, fixed=fixed))
    segnet = variant_spec(study, VARIANTS["segnet"], 8, {}, "study")
    assert segnet.model.fixed["segnet.levels"] == 2
    assert "temporal.conv_layers" not in segnet.model.fixed
    assert "backbone.stride" not in segnet.model.fixed
    for name in ("deeplabv3", "pspnet"):
        kept = variant_spec(study, VARIANTS[name], 8, {}, "study").model.fixed
        assert kept["backbone.stride"] == 4 and "segnet.levels" not in kept
    unet = variant_spec(study, VARIANTS["unet"], 8, {}, "study").model.fixed
    assert "segnet.levels" not in unet and "backbone.stride" not in unet


def test_compare_tunes_over_the_studys_tuning_folds(tmp_path, monkeypatch):
    # [tuning] folds must reach every variant's search, as they reach hpo tune's; the
    # compare once scored each replicate on the one fixed validation split instead.
    import hpo.study.compare_steps as steps

    text = TINY_STUDY.replace('sampler = "tpe"\n', 'sampler = "tpe"\n\n[tuning]\nfolds = 2\n')
    spec = load_study(write_study(tmp_path, text + COMPARE))
    seen = []
    real = steps.make_objective

    def spy(vspec, tuning, **kwargs):
        seen.append(tuning)
        return real(vspec, tuning, **kwargs)

    monkeypatch.setattr(steps, "make_objective", spy)
    settings = compare_settings(spec, variants=["fusion"], trials=4, seeds=1)
    said: list[str] = []
    run_compare(spec, settings, tmp_path / "out", say=said.append)
    assert any("each up to 2 replicates" in line for line in said if line.startswith("plan"))
    (tuning,) = seen
    test = {tuple(t) for t in tuning.cube.splits(seed=spec.seed).test}
    assert len(tuning.folds) == 2
    for train_set, val_set in tuning.folds:
        tiles = {tuple(t) for t in train_set.tiles} | {tuple(t) for t in val_set.tiles}
        assert tiles and not tiles & test
