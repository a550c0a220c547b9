"""The network objective on a tiny seeded tensor data set (real ``networks.train``)."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hpo import LayerwiseSearch, NetworkObjective, SpecError, Stage, StageFailedError
from hpo.engine.leases import FAIL_REASON_ATTR

networks = pytest.importorskip("networks", reason="the networks package is not there yet")
torch = pytest.importorskip("torch")

TINY = {
    "optim.epochs": 2,
    "optim.batch_size": 4,
    "temporal.conv_channels": 4,
    "temporal.lstm_hidden": 4,
    "temporal.downsample": 2,
    "dbn.hidden": (4,),
    "dbn.pretrain_epochs": 1,
    "dbn.max_pixels": 500,
    "dcnn.depth": 1,
    "dcnn.width": 4,
}


def tensors(n: int, seed: int, *, one_class: bool = False) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        x = torch.randn(3, 2, 16, 16, generator=g)
        y = torch.zeros(16, 16) if one_class else (x[0, -1] > 0.3).float()
        items.append((x, y, torch.ones(16, 16, dtype=torch.bool)))
    return items


@pytest.fixture(scope="module")
def base():
    return networks.ModelConfig.from_params(TINY)


def test_network_search_trains_reports_and_prunes(base, name):
    class StopTrialTwo(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number == 2

    objective = NetworkObjective(tensors(8, 0), tensors(4, 1), base_config=base, metric="f1")
    stages = [
        Stage("optim", {"optim.lr": FloatDistribution(1e-4, 1e-1, log=True)},
              defaults={"optim.lr": 1e-3}, n_random=2, n_bayes=1, sampler="tpe"),
        Stage("dcnn", {"dcnn.width": IntDistribution(2, 8)},
              defaults={"dcnn.width": 4}, n_random=2, n_bayes=0),
    ]
    search = LayerwiseSearch(stages, objective, study_name=name, pruner=StopTrialTwo())
    assert search.metric == "f1"  # taken from the objective
    result = search.run()
    optim = result.stages[0].study.trials
    assert optim[0].user_attrs["hpo:epochs"] == 2
    assert [h["epoch"] for h in optim[0].user_attrs["hpo:history"]] == [1, 2]
    assert optim[0].intermediate_values[2] == optim[0].value  # f1 of the last epoch
    assert optim[2].state == TrialState.PRUNED and optim[2].user_attrs["hpo:epochs"] == 1
    assert result.stages[0].n_complete == 3 and result.stages[1].n_complete == 2
    assert 0.0 <= result.best_value <= 1.0
    # The best configuration is a networks config.
    config = objective.config(result.best_params)
    assert config.optim.lr == result.best_params["optim.lr"]
    assert config.dcnn.width == result.best_params["dcnn.width"]


def test_undefined_auc_fails_the_trial_with_its_reason(base, name):
    objective = NetworkObjective(
        tensors(4, 0), tensors(2, 1, one_class=True), base_config=base, metric="auc"
    )
    stages = [Stage("optim", {"optim.lr": FloatDistribution(1e-4, 1e-1, log=True)},
                    defaults={"optim.lr": 1e-3}, n_random=1, n_bayes=0, max_fail=1)]
    search = LayerwiseSearch(stages, objective, study_name=name)
    with pytest.raises(StageFailedError, match="auc is undefined"):
        search.run()
    (trial,) = search.status().stages[0].study.trials
    assert trial.state == TrialState.FAIL
    assert "AUC needs both classes" in trial.user_attrs[FAIL_REASON_ATTR]


def test_unknown_metric_is_a_spec_error():
    with pytest.raises(SpecError, match="did|use one of"):
        NetworkObjective([], [], metric="accuracy")


def test_replicates_train_on_their_folds_with_their_seeds(base, name):
    from hpo.engine.replicates import REPLICATES_ATTR, Replication
    from hpo.study.objective import CURVE_ATTR
    from networks.metrics import THRESHOLD_GRID

    folds = [(tensors(8, 10), tensors(4, 11)), (tensors(8, 12), tensors(4, 13))]
    used = []

    class Spy(NetworkObjective):
        def _replicate(self, trial):
            chosen = super()._replicate(trial)
            used.append((trial.replicate, id(chosen[1]), chosen[2]))
            return chosen

    objective = Spy(tensors(8, 0), tensors(4, 1), base_config=base, metric="f1", folds=folds)
    stages = [Stage("optim", {"optim.lr": FloatDistribution(1e-4, 1e-1, log=True)},
                    defaults={"optim.lr": 1e-3}, n_random=1, n_bayes=0)]
    result = LayerwiseSearch(stages, objective, study_name=name, seed=5,
                             replication=Replication(repeats=3, racing=False)).run()
    (trial,) = result.stages[0].study.trials
    assert len(trial.user_attrs[REPLICATES_ATTR]) == 3
    curves = trial.user_attrs[CURVE_ATTR]
    assert len(curves) == 3 and all(len(c) == len(THRESHOLD_GRID) for c in curves)
    # replicate r validates on fold r % 2, never on the plain validation set
    assert [(r, v) for r, v, _ in used] == [(0, id(folds[0][1])), (1, id(folds[1][1])),
                                            (2, id(folds[0][1]))]
    assert len({s for _, _, s in used}) == 3  # a seed of its own per replicate
    assert trial.value == pytest.approx(sum(trial.user_attrs[REPLICATES_ATTR]) / 3)


def test_config_reads_a_trials_sizes_and_the_study_files(base):
    # Optuna holds a choice of sizes as "8,4"; study files and exports write [8, 4]
    objective = NetworkObjective([], [], base_config=base)
    assert objective.config({"dbn.hidden": "8,4"}).dbn.hidden == (8, 4)
    assert objective.config({"dbn.hidden": [8, 4]}) == objective.config({"dbn.hidden": "8,4"})
    assert objective.config({}).dbn.hidden == (4,)  # the base config's
