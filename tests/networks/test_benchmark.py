import json

from benchmarks import networks as bench


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


def test_ensemble_check_round_trips_members_on_this_device():
    from benchmarks import gpu_ensemble

    record = gpu_ensemble.run(gpu_ensemble.QUICK, "cpu")
    assert record["loaded_members"] == record["members"] == 2
    assert record["round_trip_max_abs_diff"] == 0.0 and record["loaded_on"] == "cpu"
    assert len(record["val_auc_members"]) == 2 and 0 <= record["val_auc_ensemble"] <= 1
    assert record["forward_seconds_ensemble"] > 0 and record["peak_gpu_mib"] is None
