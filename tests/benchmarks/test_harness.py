"""The benchmarks' harness: flags, machine record, the one result schema and its writer."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks import _harness as h

RESULTS = Path(h.__file__).resolve().parent / "results"


def test_common_flags_and_where_a_run_writes(tmp_path):
    parser = argparse.ArgumentParser()
    h.add_common_flags(parser)
    args = parser.parse_args([])
    assert (args.quick, args.out, args.seed) == (False, None, 0)
    assert h.results_dir(args) == h.RESULTS
    assert h.results_dir(parser.parse_args(["--quick"])) is None  # a quick check prints
    assert h.results_dir(parser.parse_args(["--quick", "--out", str(tmp_path)])) == tmp_path
    bare = argparse.ArgumentParser()
    h.add_common_flags(bare, seed=None)
    assert not hasattr(bare.parse_args([]), "seed")


def test_the_machine_record_names_cores_load_versions_commit_and_time():
    m = h.machine()
    assert m["cpu_count"] >= 1 and len(m["load_before"]) == 3
    assert set(m["versions"]) == {"torch", "optuna", "ray"} and m["versions"]["optuna"]
    assert m["utc"].endswith("+00:00") and "gpu" in m
    assert m["git_commit"] is None or len(m["git_commit"]) == 40


def test_rows_of_and_melt_make_one_row_per_metric_with_units():
    rows = h.rows_of("b", "d", "m", {"wall_s": 1.5, "n": 3}, {"n": "trials"}, {"seed": 1})
    assert [(r.metric, r.value, r.unit, r.setup) for r in rows] == [
        ("wall_s", 1.5, "", {"seed": 1}), ("n", 3, "trials", {"seed": 1})]  # fmt: skip
    melted = h.melt(
        "b", [{"runner": "local", "objective": "empty", "trials": 3, "per_trial_s": 0.1,
               "concurrent": 1, "curve": [1, 2]}],
        dataset="", dataset_key="objective", model_key="runner", setup_keys=("concurrent",),
    )  # fmt: skip
    assert [(r.dataset, r.model, r.metric, r.unit, r.setup) for r in melted] == [
        ("empty", "local", "trials", "", {"concurrent": 1}),
        ("empty", "local", "per_trial_s", "s", {"concurrent": 1}),
    ]  # the list is not a row
    assert [h.unit_of(m) for m in ("wall_s", "peak_rss_mib", "trials_per_hour", "ratio")] == [
        "s", "MiB", "1/h", ""]  # fmt: skip


def test_a_run_writes_the_schema_and_a_markdown_table(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(h.ROOT / "benchmarks" / "perf" / "x.py"), "--quick"])
    run = h.Run("x", tmp_path)
    assert run.command == "python -m benchmarks.perf.x --quick"
    rows = [h.Row("x", "data", "model", "speed", 2.0, "px/s", {"size": 16})]
    path = run.write(rows, settings={"size": 16}, details={"curve": [1, 2]})
    record = json.loads(path.read_text())
    assert record["schema"] == h.SCHEMA and record["name"] == "x"
    assert record["rows"] == [asdict(rows[0])] and record["details"] == {"curve": [1, 2]}
    assert len(record["machine"]["load_after"]) == 3
    assert [h.Row(**r) for r in record["rows"]] == rows
    md = (tmp_path / "x.md").read_text()
    assert md.startswith("# x\n") and "`python -m benchmarks.perf.x --quick`" in md
    assert "| x | data | model | speed | 2 | px/s | size=16 |" in md
    run.write(rows, markdown="own table\n", title="X")
    assert (tmp_path / "x.md").read_text().endswith("own table\n")
    assert h.Run("y", None).write(rows) is None


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.stem)
def test_every_recorded_result_has_the_schema(path):
    record = json.loads(path.read_text())
    assert record["schema"] == h.SCHEMA and record["name"] == path.stem
    assert {"utc", "cpu_count", "versions"} <= set(record["machine"])
    assert record["rows"], "no rows"
    for row in record["rows"]:
        assert tuple(row) == h.ROW_KEYS and isinstance(row["setup"], dict)
        assert row["value"] is None or isinstance(row["value"], float | int | bool | str)
