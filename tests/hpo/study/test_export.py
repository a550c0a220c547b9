"""Best-configuration export: content, provenance, formats, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from optuna.distributions import FloatDistribution, IntDistribution

from hpo.engine.errors import ExportError
from hpo.engine.search import LayerwiseSearch, SearchResult
from hpo.engine.stage import Stage
from hpo.study.export import EXPORT_FORMAT, export_best, load_export
from hpo.study.schema import parse_study

networks_config = pytest.importorskip("networks.config")

SPEC = {
    "name": "exp",
    "seed": 1,
    "sampler": "random",
    "data": {"format": "geotiff", "dates": ["2008"], "patch_size": 16},
    "model": {"name": "fusion", "fixed": {"optim.epochs": 2}},
    "stages": [
        {
            "name": "optim",
            "n_random": 3,
            "n_bayes": 0,
            "params": {
                "optim.lr": {
                    "type": "float",
                    "low": 1e-4,
                    "high": 1e-1,
                    "log": True,
                    "default": 1e-3,
                },
            },
        },
        {
            "name": "temporal",
            "n_random": 3,
            "n_bayes": 0,
            "params": {
                "temporal.lstm_hidden": {"type": "int", "low": 8, "high": 64, "default": 32},
            },
        },
    ],
}


def _objective(params: dict) -> float:
    return -abs(params["optim.lr"] - 0.01) - abs(params["temporal.lstm_hidden"] - 40) / 100


@pytest.fixture
def searched(tmp_path: Path) -> tuple:
    spec = parse_study({**SPEC, "storage": "sqlite:///exp.db"}, file=tmp_path / "exp.toml")
    search = LayerwiseSearch(
        spec.to_stages(),
        _objective,
        storage=spec.storage,
        study_name=spec.name,
        sampler=spec.sampler,
        seed=spec.seed,
    )
    return spec, search, search.run()


@pytest.mark.parametrize("name", ["best.yaml", "best.yml", "best.json"])
def test_export_round_trips_into_a_network_config(
    searched: tuple, tmp_path: Path, name: str
) -> None:
    spec, search, result = searched
    doc = export_best(search, tmp_path / "out" / name, spec=spec, data_hash="abc123")
    loaded = load_export(tmp_path / "out" / name)
    assert loaded == json.loads(json.dumps(doc))  # what was returned is what was written
    assert loaded["format"] == EXPORT_FORMAT and loaded["finished"] is True
    assert loaded["best_value"] == pytest.approx(result.best_value)
    config = networks_config.ModelConfig.from_dict(loaded["model"]["config"])
    assert config.optim.lr == pytest.approx(result.best_params["optim.lr"])
    assert config.temporal.lstm_hidden == result.best_params["temporal.lstm_hidden"]
    assert config.optim.epochs == 2  # the fixed part of the model section
    assert loaded["model"]["name"] == "fusion"
    assert loaded["data"] == SPEC["data"]
    assert loaded["data_base_dir"] == str(tmp_path.resolve())


def test_provenance_names_stages_trials_versions_and_commit(
    searched: tuple, tmp_path: Path
) -> None:
    spec, search, result = searched
    prov = export_best(spec, tmp_path / "best.yaml", data_hash="abc123")["provenance"]
    assert [s["study_name"] for s in prov["stages"]] == ["exp.01.optim", "exp.02.temporal"]
    for entry, stage in zip(prov["stages"], result.stages, strict=True):
        assert entry["trial_number"] == stage.ledger.trial_number
        assert entry["value"] == pytest.approx(stage.ledger.value)
    assert prov["storage"].endswith("exp.db")
    assert prov["data_hash"] == "abc123"
    assert prov["spec_fingerprint"] == spec.fingerprint()
    assert prov["versions"]["optuna"] and prov["versions"]["landslide-hpo"]
    assert "torch" in prov["versions"]
    if prov["git"] is not None:  # None outside a git checkout
        assert len(prov["git"]["commit"]) == 40


def test_password_is_masked(tmp_path: Path) -> None:
    result = SearchResult(
        study_name="s",
        storage="postgresql://alice:secret@db/hpo",
        direction="maximize",
        stages=[],
        best_params={"optim.lr": 0.01},
        best_value=0.5,
    )
    text = tmp_path / "b.json"
    export_best(result, text)
    assert "secret" not in text.read_text()
    assert load_export(text)["provenance"]["storage"] == "postgresql://alice:***@db/hpo"
    assert load_export(text)["model"]["config"]["optim"]["lr"] == 0.01


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = SearchResult("s", "in-memory", "maximize", [], {"x": 1}, 0.5)
    target = tmp_path / "best.yaml"
    export_best(result, target)
    before = target.read_text()

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(ExportError, match="disk full"):
        export_best(SearchResult("s", "in-memory", "maximize", [], {"x": 2}, 0.9), target)
    assert target.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.yaml"]  # no temp file left


def test_custom_objective_params_export_without_a_network_config(tmp_path: Path) -> None:
    search = LayerwiseSearch(
        [
            Stage("a", {"x": FloatDistribution(0, 1)}, defaults={"x": 0.5}, n_random=2, n_bayes=0),
            Stage("b", {"k": IntDistribution(1, 4)}, defaults={"k": 2}, n_random=2, n_bayes=0),
        ],
        lambda p: p["x"] + p["k"],
        study_name="plain",
        sampler="random",
    )
    search.run()
    doc = export_best(search, tmp_path / "plain.json")
    assert "config" not in doc["model"] and set(doc["model"]["params"]) == {"x", "k"}
    assert doc["provenance"]["storage"] == "in-memory"


def test_bad_formats_and_files_are_named_errors(tmp_path: Path) -> None:
    result = SearchResult("s", "in-memory", "maximize", [], {}, None)
    with pytest.raises(ExportError, match=r"\.txt") as info:
        export_best(result, tmp_path / "best.txt")
    assert "yaml" in info.value.hint
    with pytest.raises(ExportError, match="unknown format"):
        export_best(result, tmp_path / "best.txt", fmt="toml")
    export_best(result, tmp_path / "best.txt", fmt="json")  # fmt overrides the extension
    with pytest.raises(ExportError, match="cannot read"):
        load_export(tmp_path / "missing.yaml")
    (tmp_path / "other.yaml").write_text("a: 1\n")
    with pytest.raises(ExportError, match="not a best-configuration export"):
        load_export(tmp_path / "other.yaml")


def test_an_exported_network_search_retrains_to_its_tuned_value(tmp_path: Path) -> None:
    """Tuned network -> export file -> networks.ModelConfig -> networks.train."""
    torch = pytest.importorskip("torch")
    import networks
    from hpo.study.objective import NetworkObjective

    def tiny_set(n: int, seed: int) -> list[tuple]:
        g = torch.Generator().manual_seed(seed)
        items = []
        for _ in range(n):
            x = torch.randn(3, 2, 16, 16, generator=g)
            items.append((x, (x[0, -1] > 0.3).float(), torch.ones(16, 16, dtype=torch.bool)))
        return items

    tiny = {  # a network small enough to train in well under a second per epoch
        "optim.epochs": 1, "optim.batch_size": 4, "temporal.conv_channels": 4,
        "temporal.lstm_hidden": 4, "temporal.downsample": 2, "dbn.hidden": [4],
        "dbn.pretrain_epochs": 1, "dbn.max_pixels": 500, "dcnn.depth": 1, "dcnn.width": 4,
    }
    spec = parse_study(
        {
            **SPEC,
            "storage": "sqlite:///net.db",
            "model": {"name": "fusion", "fixed": tiny},
            "stages": [{**SPEC["stages"][0], "n_random": 2}],
        },
        file=tmp_path / "net.toml",
    )
    train_set, val_set = tiny_set(8, 0), tiny_set(4, 1)
    objective = NetworkObjective(
        train_set, val_set, base_config=networks.ModelConfig.from_params(tiny), seed=0
    )
    search = LayerwiseSearch(
        spec.to_stages(), objective, storage=spec.storage, study_name=spec.name,
        sampler=spec.sampler, seed=spec.seed,
    )
    result = search.run()
    assert result.finished and result.stages[0].n_complete == 2

    export_best(search, tmp_path / "best.yaml", spec=spec)
    config = networks_config.ModelConfig.from_dict(
        load_export(tmp_path / "best.yaml")["model"]["config"]
    )
    assert config.optim.lr == pytest.approx(result.best_params["optim.lr"])
    assert (config.optim.epochs, config.dcnn.width) == (1, 4)
    history = networks.train(config, train_set, val_set, seed=0)
    assert len(history.epochs) == 1
    # Same config, data and seed as the best trial: training reproduces its value.
    assert history.epochs[-1]["f1"] == pytest.approx(result.best_value, abs=1e-6)


def test_sizes_are_exported_as_lists_and_older_string_exports_still_load(tmp_path: Path) -> None:
    # a search holds a choice of sizes as "32,16" (Optuna's choices are plain values)
    result = SearchResult("s", "in-memory", "maximize", [], {"dbn.hidden": "32,16"}, 0.5)
    doc = export_best(result, tmp_path / "best.yaml")
    assert doc["model"]["params"] == {"dbn.hidden": [32, 16]}
    assert doc["model"]["config"]["dbn"]["hidden"] == [32, 16]
    assert load_export(tmp_path / "best.yaml") == json.loads(json.dumps(doc))
    old = {**doc, "model": {**doc["model"], "params": {"dbn.hidden": "32,16"}}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    params = load_export(tmp_path / "old.json")["model"]["params"]
    assert networks_config.ModelConfig.from_params(params).dbn.hidden == (32, 16)


@pytest.mark.parametrize(
    ("change", "key", "hint"),
    [
        ({"modle": {}}, "modle", "did you mean 'model'?"),
        ({"data": {"format": "geotiff", "patch_sise": 16}}, "data.patch_sise",
         "did you mean 'patch_size'?"),
        ({"model": {"name": "fusoin"}}, "model.name", "did you mean 'fusion'?"),
        ({"seed": "one"}, "seed", "write seed as an integer"),
    ],
)
def test_export_keys_are_checked_against_the_schema(
    tmp_path: Path, change: dict, key: str, hint: str
) -> None:
    result = SearchResult("s", "in-memory", "maximize", [], {"optim.lr": 0.01}, 0.5)
    doc = {**export_best(result, tmp_path / "best.json"), **change}
    (tmp_path / "edited.json").write_text(json.dumps(doc))
    with pytest.raises(ExportError) as info:
        load_export(tmp_path / "edited.json")
    assert f"[{key}]" in str(info.value) and hint in info.value.hint
    assert str(tmp_path / "edited.json") in str(info.value)


def test_an_exported_config_the_network_rejects_is_named_on_loading(tmp_path: Path) -> None:
    result = SearchResult("s", "in-memory", "maximize", [], {"optim.lr": 0.01}, 0.5)
    doc = export_best(result, tmp_path / "best.json")
    doc["model"]["config"]["dcnn"]["kernel_size"] = 4
    (tmp_path / "edited.json").write_text(json.dumps(doc))
    with pytest.raises(ExportError, match=r"\[model\.config\.dcnn\.kernel_size\] must be odd"):
        load_export(tmp_path / "edited.json")
