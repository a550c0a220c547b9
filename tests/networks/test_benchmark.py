import json

import pytest

from benchmarks.perf import networks as bench


def test_tiny_benchmark_measures_and_reports_ratios_to_segnet():
    seconds = bench.throughput(
        ["segnet", "fusion"], size=16, device="cpu", reps=1, warmup=0, threads=1
    )
    assert set(seconds) == {"segnet", "fusion"} and all(s > 0 for s in seconds.values())
    memory = bench.peak_memory("fusion", size=16, device="cpu", threads=1)
    assert memory["params"] > 0 and memory["peak_memory_mib"] >= 0
    rows = [
        {
            "model": "segnet",
            "params": 1,
            "seconds_per_step": 1.0,
            "pixels_per_s": 400.0,
            "peak_memory_mib": 1.0,
        },
        {
            "model": "fusion",
            "params": 2,
            "seconds_per_step": 2.0,
            "pixels_per_s": 200.0,
            "peak_memory_mib": 2.0,
        },
    ]
    records = bench._records(rows, reference=400.0)
    json.dumps(records)
    ratios = {
        r["model"]: r["value"] for r in records if r["metric"] == "pixels_per_s_ratio_to_segnet"
    }
    assert ratios == {"segnet": 1.0, "fusion": 0.5}
    assert {r["dataset"] for r in records} == {"synthetic-random"}
    setup = {
        "size": 16,
        "device": "cpu",
        "device_name": "x",
        "threads": 1,
        "reps": 1,
        "torch": "t",
        "date": "d",
    }
    table = bench._markdown(rows, 400.0, setup)
    assert "| fusion | 2 | 200 | 0.50 |" in table


def test_benchmark_sets_the_new_fusion_against_the_old_default_and_the_unet():
    assert bench.receptive_side("fusion") >= 64 > bench.receptive_side(bench.NARROW)
    narrow = bench.build(bench.NARROW, 3, 2)
    assert narrow.dcnn.levels == 0 and narrow.dcnn.dilations == (1, 2, 1, 2)
    seconds = bench.throughput(
        ["fusion", bench.NARROW, "unet"], size=16, device="cpu", reps=1, warmup=0, threads=1
    )
    assert set(seconds) == {"fusion", bench.NARROW, "unet"}
    rows = [
        {"model": name, "params": params, "seconds_per_step": 1.0, "pixels_per_s": pps,
         "peak_memory_mib": mem, "receptive_field_px": rf}
        for name, params, pps, mem, rf in [
            ("fusion", 150, 300.0, 30.0, 90),
            (bench.NARROW, 100, 400.0, 20.0, 34),
            ("segnet", 1000, 800.0, 10.0, 124),
        ]
    ]  # fmt: skip
    records = {(r["model"], r["metric"]): r["value"] for r in bench._records(rows, 800.0)}
    assert records["fusion", "pixels_per_s_ratio_to_fusion_narrow"] == 0.75
    assert records["fusion", "params_ratio_to_fusion_narrow"] == 1.5
    assert records["fusion", "peak_memory_ratio_to_fusion_narrow"] == 1.5
    assert records["fusion", "receptive_field_px"] == 90
    setup = {"size": 16, "device": "cpu", "device_name": "x", "threads": 1, "reps": 1,
             "torch": "t", "date": "d"}  # fmt: skip
    assert "| fusion | 150 | 300 | 0.38 | 1.000 | 30 | 90 | 1.50 | 0.75 | 1.50 |" in (
        bench._markdown(rows, 800.0, setup)
    )


def test_scene_summary_pairs_time_ratios_by_seed():
    rows = [
        {"model": name, "seed": seed, "train_seconds": secs, "test_f1": f1,
         "test_f1_at_val_threshold": f1, "test_auc": 0.9}
        for name, seed, secs, f1 in [
            ("fusion", 0, 6.0, 0.5), (bench.NARROW, 0, 4.0, 0.4),
            ("fusion", 1, 3.0, 0.7), (bench.NARROW, 1, 3.0, 0.6),
        ]
    ]  # fmt: skip
    summary = bench._scene_summary(rows)
    assert summary["fusion"]["train_seconds_ratio_to_fusion_narrow"] == 1.25
    assert summary["fusion"]["test_f1"] == pytest.approx(0.6)
    assert summary[bench.NARROW]["train_seconds_ratio_to_fusion_narrow"] == 1.0
    assert "| fusion | 0.600 ± 0.141 |" in bench._scene_markdown(
        summary, {"dataset": "d", "study": "s", "seeds": [0, 1], "torch": "t", "date": "d"}
    )


def test_ensemble_check_round_trips_members_on_this_device():
    from benchmarks.perf import gpu_ensemble

    record = gpu_ensemble.run(gpu_ensemble.QUICK, "cpu")
    assert record["loaded_members"] == record["members"] == 2
    assert record["round_trip_max_abs_diff"] == 0.0 and record["loaded_on"] == "cpu"
    assert len(record["val_auc_members"]) == 2 and 0 <= record["val_auc_ensemble"] <= 1
    assert record["forward_seconds_ensemble"] > 0 and record["peak_gpu_mib"] is None
