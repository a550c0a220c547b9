"""A stage whose best trial was cut short is named in status, the tune summary and reports."""

from __future__ import annotations

from optuna.distributions import IntDistribution

from hpo.engine import LayerwiseSearch, Stage
from hpo.engine.curves import STILL_IMPROVING_ATTR
from hpo.study.learning import HINT, short_training, short_training_lines
from hpo.study.report import write_report


def _search(name: str, storage: str) -> LayerwiseSearch:
    """Epochs tuned in 4-6 while the value climbs until epoch 10: every run is cut short."""

    def objective(params, trial):
        value = 0.0
        for epoch in range(params["epochs"]):
            value = min(epoch, 10) / 10 + params["w"] / 1000
            trial.report(epoch, value=value)
        return value

    stages = [
        Stage("optim", {"epochs": IntDistribution(4, 6)}, defaults={"epochs": 4},
              n_random=2, n_bayes=0),
        Stage("head", {"w": IntDistribution(0, 3)}, defaults={"w": 0}, n_random=3, n_bayes=0),
    ]
    return LayerwiseSearch(stages, objective, study_name=name, storage=storage,
                           sampler="random", metric="f1")


def test_a_best_trial_still_climbing_is_flagged_per_stage(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = _search("short", url).run()
    flagged = {f.stage: f for f in short_training(result)}
    assert "optim" in flagged
    assert flagged["optim"].trend.steps == result.stages[0].best_trial.params["epochs"]
    for stage in result.stages:  # a copied incumbent is judged where it trained
        copied = "hpo:copied_from" in stage.best_trial.user_attrs
        assert (stage.name in flagged) == (not copied)
    optim = result.stages[0]  # the dashboard shows it among the stage's user attributes
    stored = optim.study.user_attrs[STILL_IMPROVING_ATTR]
    assert stored["trial"] == optim.best_trial.number and stored["gain"] > 0
    lines = short_training_lines(result, "f1")
    assert lines[-1].strip() == HINT
    assert len(lines) == 2
    assert lines[0].startswith(f"warning: the best trial of stages {', '.join(flagged)} was")
    assert f"(optim #{result.stages[0].best_trial.number}: f1 " in lines[0]
    report = write_report(result, tmp_path / "report.md", metric="f1")
    text = report.path.read_text()
    assert "**Training may be too short:**" in text and HINT in text


def test_nothing_is_said_when_every_best_trial_plateaued(tmp_path):
    def objective(params, trial):
        for epoch in range(12):
            trial.report(epoch, value=min(epoch, 3) / 3)
        return 1.0

    stage = Stage("optim", {"epochs": IntDistribution(4, 12)}, defaults={"epochs": 4},
                  n_random=2, n_bayes=0)
    result = LayerwiseSearch([stage], objective, study_name="flat",
                             storage=f"sqlite:///{tmp_path / 'f.db'}", sampler="random").run()
    assert short_training(result) == [] and short_training_lines(result, "f1") == []
    assert STILL_IMPROVING_ATTR not in result.stages[0].study.user_attrs
