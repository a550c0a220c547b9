"""Noise-aware layer-wise search: replicates, racing, the ledger's estimate."""

import io
import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from rich.console import Console

from hpo import LayerwiseSearch, SpecError, Stage
from hpo.engine.ledger import read_ledger
from hpo.engine.progress import TuneProgress
from hpo.engine.replicates import (
    CONFIRMS_ATTR,
    NOISE_ATTR,
    RACED_ATTR,
    REPLICATES_ATTR,
    RaceBar,
    ReplicatedObjective,
    Replication,
    confirmation_bar,
    estimate_best,
    noise_of,
    paired_gain,
    replicate_seed,
    stage_incumbent,
    superseded,
    switch_bar,
    to_confirm,
)

# A steady configuration (mean 0.60, sd 0.02) against a lottery ticket (mean 0.45, sd
# 0.25): one run of the ticket often beats the steady one, its mean never does.
_MEANS = {"steady": (0.60, 0.02), "lottery": (0.45, 0.25), "bad": (0.10, 0.02)}


def _noisy(params, trial):
    mean, sd = _MEANS[params["kind"]]
    seed = getattr(trial, "replicate_seed", None)
    rng = np.random.default_rng(seed if seed is not None else 1 + trial.number)
    return mean + sd * float(rng.standard_normal())


def _stage(**kw):
    space = {"kind": CategoricalDistribution(["steady", "lottery", "bad"])}
    return Stage("pick", space, defaults={"kind": "steady"}, **kw)


def test_the_ledger_hands_on_the_best_mean_not_the_luckiest_run():
    stage = _stage(n_random=6, n_bayes=0)
    # Seed 2 draws the lottery three times; one of its single runs scores 0.96.
    single = LayerwiseSearch([stage], _noisy, seed=2, sampler="random").run()
    assert single.stages[0].ledger.params == {"kind": "lottery"}
    noisy = LayerwiseSearch([stage], _noisy, seed=2, sampler="random",
                            replication=Replication(repeats=5, racing=False)).run()
    entry = noisy.stages[0].ledger
    assert entry.params == {"kind": "steady"}
    assert len(entry.replicates) == 5
    assert entry.value == pytest.approx(sum(entry.replicates) / 5)
    assert entry.se is not None and 0 < entry.se < 0.05
    assert entry.noise is not None and entry.noise["sd"] > 0.02  # the lottery's spread too
    # Every trial keeps its replicates; the lottery's best single run beat the steady mean
    trials = noisy.stages[0].study.trials
    lottery = [v for t in trials if t.params["kind"] == "lottery"
               for v in t.user_attrs[REPLICATES_ATTR]]
    assert lottery and max(lottery) > entry.value
    assert single.stages[0].ledger.replicates == [single.best_value]


def test_racing_stops_replicating_a_hopeless_configuration():
    stage = Stage("pick", {"kind": CategoricalDistribution(["steady", "bad"])},
                  defaults={"kind": "steady"}, n_random=5, n_bayes=0)
    calls = []

    def objective(params, trial):
        calls.append((params["kind"], trial.replicate))
        return _noisy(params, trial)

    result = LayerwiseSearch([stage], objective, seed=0, sampler="random",
                             replication=Replication(repeats=4)).run()
    trials = result.stages[0].study.trials
    bad = [t for t in trials if t.params["kind"] == "bad"]
    steady = [t for t in trials if t.params["kind"] == "steady"]
    assert bad, "the random phase should have drawn the bad configuration"
    for t in bad:
        assert t.user_attrs[RACED_ATTR] is True
        assert len(t.user_attrs[REPLICATES_ATTR]) == 1  # dropped after its first run
    assert len(steady[0].user_attrs[REPLICATES_ATTR]) == 4  # the incumbent: every one
    assert result.stages[0].ledger.params == {"kind": "steady"}
    assert [k for k, _ in calls].count("bad") == len(bad)
    assert result.stages[0].study.user_attrs[NOISE_ATTR]["sd"] > 0


def _by_seed(params, trial):
    # 1 - a, plus a little noise that the replicate's seed fixes (module level: it pickles)
    return 1.0 - params["a"] + 0.001 * (trial.replicate_seed % 1000)


def _two_stages(a_high):
    # a = 0.5 (the default) is s1's best when 1 - a is maximized; with a_high < 0.5
    # every other point beats it
    low, high = sorted((0.5, a_high))
    return [Stage("s1", {"a": FloatDistribution(low, high)}, defaults={"a": 0.5},
                  n_random=2, n_bayes=0),
            Stage("s2", {"b": FloatDistribution(0, 1)}, defaults={"b": 0.5},
                  n_random=2, n_bayes=0)]


def test_an_incumbent_its_stage_selected_is_measured_again_with_new_seeds():
    # A copied winner would hand on the value it won a noisy race with.
    seen = {}

    def objective(params, trial):
        seen.setdefault(trial.stage, set()).add((trial.replicate, trial.replicate_seed))
        return _by_seed(params, trial)

    result = LayerwiseSearch(_two_stages(0.1), objective, seed=4, sampler="random",
                             replication=Replication(repeats=3, racing=False)).run()
    s1, s2 = result.stages
    assert s1.ledger.trial_number != 0 and s1.ledger.seeds is None  # the challenger won
    first = s2.study.trials[0]
    assert "hpo:copied_from" not in first.user_attrs
    assert len(first.user_attrs[REPLICATES_ATTR]) == 3
    for stage in ("s1", "s2"):
        assert seen[stage] == {(r, replicate_seed(4, stage, r)) for r in range(3)}
    assert {s for _, s in seen["s1"]}.isdisjoint({s for _, s in seen["s2"]})


@pytest.mark.parametrize("isolate", [False, True])
def test_an_incumbent_handed_on_keeps_its_replicates_and_seeds(isolate):
    # Measured, not selected: the next stage pairs with its replicates instead of
    # training it again, so its trials run with the seeds those replicates had.
    result = LayerwiseSearch(_two_stages(0.9), _by_seed, seed=4, sampler="random",
                             isolate=isolate,
                             replication=Replication(repeats=3, racing=False)).run()
    s1, s2 = result.stages
    assert s1.ledger.trial_number == 0 and s1.ledger.seeds == "s1"
    copied = s2.study.trials[0]
    assert copied.user_attrs["hpo:copied_from"]["seeds"] == "s1"
    assert copied.user_attrs[REPLICATES_ATTR] == s1.ledger.replicates
    expected = [0.5 + 0.001 * (replicate_seed(4, "s1", r) % 1000) for r in range(3)]
    assert s1.ledger.replicates == pytest.approx(expected)
    challenger = s2.study.trials[1]  # b changes nothing: the same values, paired
    assert challenger.user_attrs[REPLICATES_ATTR] == pytest.approx(expected)
    assert s2.ledger.trial_number == 0 and s2.ledger.seeds == "s1"  # and on down the chain


def test_resume_and_load_keep_the_replicate_counts(tmp_path):
    url = f"sqlite:///{tmp_path}/r.db"
    stage = _stage(n_random=3, n_bayes=0)
    LayerwiseSearch([stage], _noisy, storage=url, study_name="r", seed=2,
                    sampler="random", replication=Replication(repeats=3)).run()
    loaded = LayerwiseSearch.load(url, "r")
    assert loaded.replication == Replication(repeats=3)
    entry = read_ledger(loaded.status().stages[0].study)
    assert len(entry.replicates) == 3 and entry.se is not None
    # Running it again is a no-op: the stored stage is finished with the same spec.
    again = LayerwiseSearch([stage], _noisy, storage=url, study_name="r", seed=2,
                            sampler="random", replication=Replication(repeats=3)).run()
    assert again.stages[0].ledger == entry


def test_a_failed_replicate_fails_the_trial():
    def objective(params, trial):
        return math.nan if trial.replicate == 1 else 0.5

    stage = Stage("s", {"a": FloatDistribution(0, 1)}, defaults={"a": 0.5},
                  n_random=1, n_bayes=0, max_fail=1)
    with pytest.raises(Exception, match="replicate 1"):
        LayerwiseSearch([stage], objective, replication=3).run()


def test_race_bar_is_paired_and_needs_noise():
    bar = RaceBar((0.6, 0.5, 0.7), sd=0.05, maximize=True, z=1.0)
    assert bar.hopeless([0.3])
    assert not bar.hopeless([0.58])
    assert not RaceBar((0.6,), sd=None, maximize=True, z=1.0).hopeless([0.0])
    low = RaceBar((0.6,), sd=0.05, maximize=False, z=1.0)
    assert low.hopeless([0.9]) and not low.hopeless([0.3])


def test_noise_and_paired_gain_from_replicates():
    study = optuna.create_study(direction="maximize")
    for values in ([0.5, 0.6, 0.7], [0.6, 0.7, 0.8]):
        study.add_trial(optuna.trial.create_trial(
            value=sum(values) / 3, params={}, distributions={},
            user_attrs={REPLICATES_ATTR: values}))
    noise = noise_of(study.trials)
    assert noise["sd"] == pytest.approx(0.1) and noise["dof"] == 4
    gain = paired_gain([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])
    assert gain["mean"] == pytest.approx(0.1) and gain["se"] == pytest.approx(0.0, abs=1e-9)
    assert paired_gain([0.6], [0.5]) is None


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_repeat_counts_are_named_errors(bad):
    with pytest.raises(SpecError, match="repeats"):
        Replication(repeats=bad)


def test_export_records_the_estimate_and_a_pooled_threshold(tmp_path):
    from hpo.engine.replicates import Scored
    from hpo.study.export import export_best, load_export
    from hpo.study.objective import CURVE_ATTR
    from networks.metrics import THRESHOLD_GRID

    grid = np.asarray(THRESHOLD_GRID)

    def objective(params, trial):
        # Every replicate's F1 peaks at the cut 0.8, well above its F1 at 0.5.
        value = _noisy(params, trial)
        return Scored(value, {CURVE_ATTR: list(value - 2 * (grid - 0.8) ** 2)})

    search = LayerwiseSearch([_stage(n_random=3, n_bayes=0)], objective, seed=2,
                             sampler="random", replication=Replication(repeats=3))
    search.run()
    export_best(search, tmp_path / "best.yaml")
    doc = load_export(tmp_path / "best.yaml")
    estimate = doc["estimate"]
    assert estimate["n"] == 3 and len(estimate["replicates"]) == 3
    assert estimate["value"] == pytest.approx(doc["best_value"])
    assert estimate["se"] > 0 and estimate["noise_sd"] > 0
    assert doc["threshold"]["kept"] and doc["threshold"]["runs"] == 3
    assert doc["validation_threshold"] == pytest.approx(doc["threshold"]["threshold"])
    assert abs(doc["validation_threshold"] - 0.8) < 0.05


def test_a_parallel_local_runner_ships_the_replicate_loop_to_its_workers():
    # The progress display wraps the objective in the driver; the workers must still run
    # every replicate (the loop travels with the objective, the display stays behind).
    from hpo.engine.runners.local import _driver_side

    class Display:
        def __init__(self, objective):
            self.__wrapped__ = objective
            self.started = 0

        def driver_trial_started(self, params, trial):
            self.started += 1

        def driver_trial_finished(self, params, trial):
            pass

        def __call__(self, params, trial):
            return self.__wrapped__(params, trial)

    from hpo.engine.replicates import ReplicatedObjective

    display = Display(_noisy)
    wrapped = ReplicatedObjective(display, Replication(repeats=3), seed=0)
    hooks, inner = _driver_side(wrapped)
    assert hooks == (wrapped,)
    assert isinstance(inner, ReplicatedObjective) and inner.objective is _noisy
    hooks[0].driver_trial_started({}, None)
    assert display.started == 1


def test_replicates_run_in_parallel_worker_processes(tmp_path):
    from hpo.engine.runners.local import LocalRunner

    stage = _stage(n_random=4, n_bayes=0)
    result = LayerwiseSearch([stage], _noisy, seed=2, sampler="random",
                             storage=f"sqlite:///{tmp_path}/p.db", study_name="p",
                             runner=LocalRunner(workers=2),
                             replication=Replication(repeats=3, racing=False)).run()
    trials = result.stages[0].study.trials
    assert all(len(t.user_attrs[REPLICATES_ATTR]) == 3 for t in trials)
    assert len(result.stages[0].ledger.replicates) == 3


def test_the_pruner_stops_a_replicated_trial_on_its_first_replicate():
    class StopTrialTwo(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number == 2

    calls = []

    def objective(params, trial):
        calls.append((trial.number, trial.replicate))
        for epoch in (1, 2, 3):
            trial.report(epoch, f1=params["a"] * epoch / 3)
            if trial.should_stop():
                break
        return params["a"]

    stage = Stage("s", {"a": FloatDistribution(0, 1)}, defaults={"a": 0.5},
                  n_random=3, n_bayes=0)
    result = LayerwiseSearch([stage], objective, seed=0, metric="f1", pruner=StopTrialTwo(),
                             replication=Replication(repeats=2, racing=False)).run()
    trials = result.stages[0].study.trials
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert [t.number for t in pruned] == [2]
    assert (2, 1) not in calls  # no second replicate for a pruned configuration
    assert pruned[0].user_attrs["hpo:epochs"] == 1
    assert result.stages[0].n_complete == 3  # another configuration took its place


def test_prune_in_the_study_file_gives_a_median_pruner(tmp_path):
    from hpo.study import load_study, make_search
    from tests.hpo.cli.test_cli import TINY_STUDY, write_study

    text = TINY_STUDY.replace('sampler = "tpe"\n', 'sampler = "tpe"\n\n[tuning]\nprune = true\n')
    search = make_search(load_study(write_study(tmp_path, text), check_paths=False))
    assert isinstance(search.pruner, optuna.pruners.MedianPruner)
    plain = make_search(load_study(write_study(tmp_path / "b"), check_paths=False))
    assert isinstance(plain.pruner, optuna.pruners.NopPruner)


def test_changing_the_replicates_of_a_stored_stage_is_a_named_error(tmp_path):
    from hpo import StageChangedError

    url = f"sqlite:///{tmp_path}/c.db"
    stage = _stage(n_random=2, n_bayes=0)
    LayerwiseSearch([stage], _noisy, storage=url, study_name="c", sampler="random",
                    replication=3).run()
    with pytest.raises(StageChangedError, match="replication"):
        LayerwiseSearch([stage], _noisy, storage=url, study_name="c", sampler="random",
                        replication=5).run()


def test_dry_run_says_how_trials_are_scored(tmp_path, capsys):
    from hpo.cli.main import main
    from tests.hpo.cli.test_cli import TINY_STUDY, write_study

    text = TINY_STUDY.replace('sampler = "tpe"\n',
                              'sampler = "tpe"\n\n[tuning]\nfolds = 3\nprune = true\n')
    assert main(["tune", str(write_study(tmp_path, text)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "trials: mean of up to 3 replicates over folds (replicate r on fold r % 3), " \
           "raced at z = 1, median pruning" in out
    assert main(["tune", str(write_study(tmp_path / "b")), "--dry-run"]) == 0
    assert "trials: one training run each" in capsys.readouterr().out
    more = text.replace("prune = true\n", "prune = true\nmax_repeats = 6\n")
    assert main(["tune", str(write_study(tmp_path / "c", more)), "--dry-run"]) == 0
    assert "replicate r on fold r % 3), up to 6 for the incumbent and close contenders" \
        in capsys.readouterr().out
    nested = text.replace('cache_dir = "cubes"\n',
                          'cache_dir = "cubes"\nfolds = 4\nfold = 2\nfold_role = "test"\n')
    assert main(["tune", str(write_study(tmp_path / "d", nested)), "--dry-run"]) == 0
    assert "(replicate r on fold r % 3, dealt outside test fold 2 of 4)" \
        in capsys.readouterr().out


def test_stage_studies_name_their_metric_for_the_dashboard(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    LayerwiseSearch([_stage(n_random=1, n_bayes=0)], _noisy, storage=url, study_name="m",
                    metric="f1").run()
    study = optuna.load_study(study_name="m.01.pick", storage=url)
    assert study.metric_names == ["f1"]  # optuna-dashboard shows "f1", not "Objective 0"
    assert LayerwiseSearch.load(url, "m").status().spec["metric"] == "f1"


def test_a_search_stored_before_strategies_resumes_stage_wise(tmp_path):
    # The shared model is the default now; a stored stage-wise search must resume as it was.
    url = f"sqlite:///{tmp_path}/old.db"
    stages = [Stage("s1", {"a": FloatDistribution(0, 1)}, defaults={"a": 0.5},
                    n_random=2, n_bayes=1),
              Stage("s2", {"b": FloatDistribution(0, 1)}, defaults={"b": 0.5},
                    n_random=2, n_bayes=1)]

    def objective(params):
        return params["a"] + params.get("b", 0.5)

    LayerwiseSearch(stages[:1], objective, storage=url, study_name="old",
                    strategy="stagewise").run()
    # What a search of an older version stored: its keys carry no strategy.
    study = optuna.load_study(study_name="old.01.s1", storage=url)
    key = study.user_attrs["hpo:stage_key"]
    assert "strategy" not in key
    resumed = LayerwiseSearch(stages, objective, storage=url, study_name="old").run()
    assert resumed.finished and resumed.stages[0].ledger is not None


def test_a_stage_hands_on_another_configuration_only_when_it_measurably_wins():
    # "edge" is a little better on average than the incumbent, well within the noise;
    # "clear" is better by many standard errors.
    means = {"incumbent": (0.50, 0.10), "edge": (0.52, 0.10), "clear": (0.80, 0.02)}

    def objective(params, trial):
        mean, sd = means[params["kind"]]
        # each configuration's own noise (not shared through the replicate's seed)
        rng = np.random.default_rng([trial.replicate_seed, list(means).index(params["kind"])])
        return mean + sd * float(rng.standard_normal())

    def run(choices, **kw):
        stage = Stage("s", {"kind": CategoricalDistribution(choices)},
                      defaults={"kind": "incumbent"}, n_random=4, n_bayes=0)
        search = LayerwiseSearch([stage], objective, seed=1, sampler="random",
                                 replication=Replication(repeats=4, racing=False, **kw))
        return search.run().stages[0]

    # seed 1: "edge" has the better mean of this stage's four seeds, within the noise
    assert run(["incumbent", "edge"], switch_z=1e-9).ledger.params == {"kind": "edge"}
    close = run(["incumbent", "edge"])
    declined = close.study.user_attrs["hpo:declined"]
    assert close.ledger.params == {"kind": "incumbent"} and close.ledger.gain is None
    assert 0 < declined["mean"] <= switch_bar(2.0, 4) * declined["se"]
    clear = run(["incumbent", "clear"])
    assert clear.ledger.params == {"kind": "clear"}
    assert clear.ledger.gain["mean"] > switch_bar(2.0, 4) * clear.ledger.gain["se"]
    # Student's t: few replicates ask for more standard errors; many, for about z
    assert switch_bar(2.0, 3) > 4 and abs(switch_bar(2.0, 1000) - 2.0) < 0.01
    with pytest.raises(SpecError, match="switch_z"):
        Replication(repeats=2, switch_z=0)


# ------------------------------------------------------------------ intensification


def _contest(gain: float, sd: float = 0.1):
    """An objective where "challenger" beats "incumbent" by ``gain`` on average, each
    replicate with its own noise (not shared through the seed)."""
    means = {"incumbent": 0.5, "challenger": 0.5 + gain}

    def objective(params, trial):
        rng = np.random.default_rng([trial.replicate_seed, params["kind"] == "challenger"])
        return means[params["kind"]] + sd * float(rng.standard_normal())

    return objective


def _one_stage_search(objective, replication, seed=0):
    stage = Stage("s", {"kind": CategoricalDistribution(["incumbent", "challenger"])},
                  defaults={"kind": "incumbent"}, n_random=2, n_bayes=0)
    return LayerwiseSearch([stage], objective, seed=seed, sampler="random",
                           replication=replication)


def test_intensification_settles_a_close_contest_that_three_replicates_cannot():
    # A real gain of 0.15 at sd 0.1 per run. Seed 5: three paired runs show +0.27 ± 0.11,
    # 2.4 se, under the 4.5 se Student's t asks of three; two more runs settle it.
    found = {}
    for most in (None, 10):
        objective = _contest(0.15)
        result = _one_stage_search(objective, Replication(repeats=3, racing=False,
                                                          max_repeats=most), seed=5).run()
        stage = result.stages[0]
        trials = {t.params["kind"]: t for t in stage.study.trials}
        found[most] = (stage.ledger.params["kind"],
                       {k: len(t.user_attrs[REPLICATES_ATTR]) for k, t in trials.items()})
    assert found[None] == ("incumbent", {"incumbent": 3, "challenger": 3})
    kind, counts = found[10]
    assert kind == "challenger"
    assert counts["incumbent"] == 10 and 3 < counts["challenger"] < 10


def test_a_clear_winner_and_a_clear_loser_get_no_more_than_repeats():
    # the loser is raced out after its first replicate, as without intensification
    for gain, runs in ((0.6, 3), (-0.3, 1)):
        objective = _contest(gain, sd=0.02)
        result = _one_stage_search(objective, Replication(repeats=3, max_repeats=8)).run()
        counts = {t.params["kind"]: len(t.user_attrs[REPLICATES_ATTR])
                  for t in result.stages[0].study.trials}
        assert counts == {"incumbent": 8, "challenger": runs}, gain
        assert result.stages[0].ledger.params["kind"] == (
            "challenger" if gain > 0 else "incumbent")


def test_undecided_pairs_with_the_incumbent_and_stops_where_it_has_no_more():
    bar = RaceBar((), None, True, 1.0, incumbent=(0.50, 0.45, 0.55, 0.50))
    assert bar.undecided([0.56, 0.52, 0.58], switch_z=2.0)  # +0.05 ± 0.01: 5 se < 7.3 se
    assert not bar.undecided([0.90, 0.85, 0.95], switch_z=2.0)  # +0.40: decided, it wins
    assert not bar.undecided([0.40, 0.35, 0.45], switch_z=2.0)  # behind: decided, it loses
    assert not bar.undecided([0.56, 0.52, 0.58, 0.51], switch_z=2.0)  # nothing to pair with
    again = RaceBar.from_dict(bar.to_dict())
    assert again == bar
    assert RaceBar.from_dict({"values": [1.0], "sd": 0.1, "maximize": True, "z": 1.0}) == \
        RaceBar((1.0,), 0.1, True, 1.0)  # a bar of an earlier version


def test_max_repeats_is_checked_and_keeps_earlier_keys():
    assert Replication(repeats=3).to_dict() == Replication(repeats=3, max_repeats=3).to_dict()
    assert "max_repeats" not in Replication(repeats=3).to_dict()
    assert Replication(repeats=3, max_repeats=6).to_dict()["max_repeats"] == 6
    assert not Replication(repeats=1, max_repeats=4).intensifies
    for bad in (2, 2.5, True):
        with pytest.raises(SpecError, match="max_repeats"):
            Replication(repeats=3, max_repeats=bad)


# ------------------------------------------------------------------ confirmation runs


def _close_contest(params, trial):
    """``_contest(0.15)`` at module level, so worker processes can run it."""
    return _contest(0.15)(params, trial)


def test_a_challenger_that_ran_beside_the_incumbent_gets_a_confirmation_run(tmp_path):
    # With two workers the challenger starts while the incumbent is still measured: it has
    # nothing to pair with and stops at 3 replicates (+0.27 +- 0.11, under 4.5 se). The
    # barrier then queues a run of the same point that goes on from its replicates.
    from hpo.engine.runners.local import LocalRunner

    # x changes nothing but makes the space continuous: the confirmation run's point is
    # COMPLETE in the stage, and it must still run (not be redrawn as a duplicate)
    stage = Stage("s", {"kind": CategoricalDistribution(["incumbent", "challenger"]),
                        "x": FloatDistribution(0, 1)},
                  defaults={"kind": "incumbent", "x": 0.5}, n_random=2, n_bayes=0)
    search = LayerwiseSearch([stage], _close_contest, seed=5, sampler="random",
                             storage=f"sqlite:///{tmp_path}/c.db", study_name="c",
                             runner=LocalRunner(workers=2),
                             replication=Replication(repeats=3, racing=False,
                                                     max_repeats=10))
    out = io.StringIO()
    display = TuneProgress(search.status(), console=Console(file=out, width=200), live=False)
    search.callbacks = [display.callback]
    search.objective = display.wrap(search.objective)
    with display:
        result = search.run()
    # the display counts the confirmation run into the stage's budget, as status does
    assert "[1/1 s] trial 2:" in out.getvalue()
    assert "3/3 trials, 0 failed, 0 running" in out.getvalue().splitlines()[-1]
    assert display.stages[0].state == "finished" and display.stages[0].total == 3
    trials = result.stages[0].study.trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    first, confirmation = trials[1], trials[2]
    assert first.params == confirmation.params and first.params["kind"] == "challenger"
    assert confirmation.user_attrs[CONFIRMS_ATTR] == 1
    before, after = first.user_attrs[REPLICATES_ATTR], confirmation.user_attrs[REPLICATES_ATTR]
    assert len(before) == 3 and 3 < len(after) < 10 and after[:3] == before
    ledger = result.stages[0].ledger
    assert ledger.params["kind"] == "challenger" and ledger.trial_number == 2
    assert ledger.replicates == after
    assert (result.stages[0].n_complete, result.stages[0].budget) == (3, 3)  # as status shows


def _done(number, values, **attrs):
    return optuna.trial.create_trial(
        value=float(np.mean(values)), params={"x": float(number)},
        distributions={"x": FloatDistribution(0, 100)},
        user_attrs={REPLICATES_ATTR: list(values), **attrs})


def _numbered(*trials):
    for k, t in enumerate(trials):
        t.number = k
    return list(trials)


def test_the_stage_incumbent_is_the_incumbent_phase_trial_even_when_requeued():
    # Trial 0 (the incumbent) was lost and queued again as trial 2; random trial 1 had
    # completed first. Pairing, the ledger and confirmations all judge against trial 2.
    lost = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={"x": 0.0},
                                     distributions={"x": FloatDistribution(0, 100)},
                                     user_attrs={"hpo:phase": "incumbent"})
    trials = _numbered(lost, _done(1, [0.5, 0.6]),
                       _done(2, [0.4, 0.45], **{"hpo:phase": "incumbent"}))
    assert stage_incumbent(trials).number == 2
    # a storage from before the phase was stored: the first COMPLETE trial
    assert stage_incumbent(_numbered(_done(0, [0.5]), _done(1, [0.6]))).number == 0
    assert stage_incumbent([lost]) is None


def test_to_confirm_picks_an_undecided_best_once_and_a_confirmation_supersedes_it():
    intensify = Replication(repeats=3, max_repeats=6)
    incumbent = _done(0, [0.50, 0.45, 0.55, 0.50, 0.48, 0.52])
    close = _done(1, [0.56, 0.52, 0.58])  # +0.05 +- 0.01 over 3 pairs: 5 se < 7.3 se
    trials = _numbered(incumbent, close)
    assert to_confirm(trials, intensify, maximize=True).number == 1
    assert to_confirm(trials, Replication(repeats=3), maximize=True) is None  # no max_repeats
    assert to_confirm(_numbered(incumbent, _done(1, [0.9, 0.85, 0.95])), intensify,
                      maximize=True) is None  # decided: it wins outright
    # the confirmation continues trial 1 and, once COMPLETE, replaces it everywhere
    confirmed = _done(1, [0.56, 0.52, 0.58, 0.40, 0.42, 0.41], **{CONFIRMS_ATTR: 1})
    trials = _numbered(incumbent, close, confirmed)
    assert superseded(trials) == {1}
    assert to_confirm(trials, intensify, maximize=True) is None  # confirmed once already
    assert estimate_best(trials, repeats=3, maximize=True).number == 0  # it fell back
    assert noise_of(trials)["trials"] == 2  # the continued run is not counted twice


def test_a_confirmation_bar_resumes_the_replicates_and_their_attributes():
    incumbent = _done(0, [0.50, 0.45, 0.55, 0.50])
    close = _done(1, [0.56, 0.52, 0.58], **{"hpo:f1_curve": [[1], [2], [3]],
                                             "hpo:history": [{}, {}, {}]})
    bar = confirmation_bar(_numbered(incumbent, close), close,
                           Replication(repeats=3, max_repeats=4), maximize=True,
                           exclude=("hpo:history",))
    assert bar.resume == (0.56, 0.52, 0.58) and bar.incumbent == (0.50, 0.45, 0.55, 0.50)
    assert bar.resume_attrs == {"hpo:f1_curve": [[1], [2], [3]]}
    assert RaceBar.from_dict(bar.to_dict()) == bar
    calls = []

    def objective(params, trial):
        calls.append(trial.replicate)
        return 0.9

    class Trial:
        race = bar.to_dict()
        stage = "s"

    scored = ReplicatedObjective(objective, Replication(repeats=3, max_repeats=4), 0)(
        {}, Trial())
    assert calls == [3]  # only the replicate the incumbent can still pair
    assert scored.attrs[REPLICATES_ATTR] == [0.56, 0.52, 0.58, 0.9]
