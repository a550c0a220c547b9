"""Seed ensembles on the training device: members, checkpoint round trip, inference cost.

What ``hpo train --members N`` does, on seeded random tiles held in memory (the label
follows one input channel, so the members learn something and differ by seed):

1. ``N`` fusion networks trained by ``networks.train`` on the device, one seed each;
2. the :class:`networks.SeedEnsemble` of them saved and loaded back onto the device: the
   largest difference between its outputs before and after (0 expected);
3. validation AUC of each member and of the ensemble, and the forward time of the
   ensemble against one member (median of repeated passes over the validation tiles).

It needs torch and this repository only (no Optuna, Ray or rasterio: ``ray_runner``
imports them only inside its functions), so it runs on a
bare GPU machine. Without CUDA it runs on the CPU and says so.

    python -m benchmarks.perf.gpu_ensemble          # writes benchmarks/results/gpu_ensemble.json
    python -m benchmarks.perf.gpu_ensemble --quick  # tiny sizes, prints only
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Row, Run, add_common_flags, results_dir, rows_of
from benchmarks.perf.ray_runner import random_tiles

SETUP_KEYS = ("benchmark", "date", "device", "dataset", "model", "metric", "sizes", "torch")
UNITS = {"forward_seconds_member": "s", "forward_seconds_ensemble": "s",
         "peak_gpu_mib": "MiB", "train_seconds_per_member": "s", "round_trip_max_abs_diff": ""}
FULL = {"members": 3, "epochs": 6, "train": 64, "val": 16, "shape": (6, 3, 64, 64)}
QUICK = {"members": 2, "epochs": 1, "train": 4, "val": 2, "shape": (3, 2, 16, 16)}
_PASSES = 10


def _forward_seconds(model: Any, x: Any) -> float:
    """Median seconds of one forward pass over ``x`` (after one warm-up pass)."""
    import torch

    times = []
    with torch.no_grad():
        for i in range(_PASSES + 1):
            if x.is_cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            model(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(sizes: dict[str, Any], device: str) -> dict[str, Any]:
    """Train the members, round-trip their ensemble, and measure it; the record."""
    import torch

    from networks import SeedEnsemble, load_checkpoint, roc_auc, save_checkpoint, train
    from networks.config import ModelConfig

    shape = sizes["shape"]
    train_set = random_tiles(sizes["train"], 0, shape, cut=0.8)
    val_set = random_tiles(sizes["val"], 1, shape, cut=0.8)
    config = ModelConfig.from_params({"optim.epochs": sizes["epochs"], "dcnn.depth": 3,
                                      "temporal.lstm_hidden": 16, "dbn.max_pixels": 5000})
    members, seconds = [], []
    for seed in range(sizes["members"]):
        started = time.monotonic()
        members.append(train(config, train_set, val_set, seed=seed, device=device).model)
        seconds.append(round(time.monotonic() - started, 2))
    ensemble = SeedEnsemble(members).eval()
    x = torch.stack([t[0] for t in val_set]).to(device)
    labels = torch.stack([t[1] for t in val_set]).numpy().ravel()
    with torch.no_grad():
        before = ensemble(x)
        probs = [torch.softmax(m(x).float(), dim=1)[:, 1].cpu().numpy().ravel()
                 for m in members]
        ensemble_prob = torch.softmax(before, dim=1)[:, 1].cpu().numpy().ravel()
    with tempfile.TemporaryDirectory() as folder:
        path = save_checkpoint(Path(folder) / "model.pt", ensemble, model_name="fusion",
                               config=config, source_names=[f"s{i}" for i in range(shape[0])])
        loaded = load_checkpoint(path, map_location=device)
        with torch.no_grad():
            after = loaded.model(x)
    single, whole = _forward_seconds(members[0], x), _forward_seconds(ensemble, x)
    return {
        "members": sizes["members"],
        "loaded_members": loaded.members,
        "loaded_on": str(next(loaded.model.parameters()).device),
        "train_seconds_per_member": seconds,
        "round_trip_max_abs_diff": float((after - before).abs().max()),
        "val_auc_members": [round(float(roc_auc(p, labels)), 4) for p in probs],
        "val_auc_ensemble": round(float(roc_auc(ensemble_prob, labels)), 4),
        "forward_seconds_member": round(single, 5),
        "forward_seconds_ensemble": round(whole, 5),
        "forward_ratio": round(whole / single, 2),
        "peak_gpu_mib": (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                         if device == "cuda" else None),
    }


def to_rows(record: dict[str, Any]) -> list[Row]:
    """One row per measure; per-member lists as one row per member (``setup`` member)."""
    measures = {k: v for k, v in record.items() if k not in SETUP_KEYS}
    lists = {k: measures.pop(k) for k in ("train_seconds_per_member", "val_auc_members")}
    on = {"device": record["device"]}
    rows = rows_of("gpu_ensemble", record["dataset"], record["model"], measures, UNITS, on)
    for metric, values in lists.items():
        for member, value in enumerate(values):
            rows += rows_of("gpu_ensemble", record["dataset"], record["model"],
                            {metric: value}, UNITS, {**on, "member": member})
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the check on the training device (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser, seed=None)  # --quick: tiny sizes
    args = parser.parse_args(argv)
    recorder = Run("gpu_ensemble", results_dir(args))
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = QUICK if args.quick else FULL
    record = {
        "benchmark": "gpu_ensemble",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": (torch.cuda.get_device_name(0) if device == "cuda"
                   else f"cpu ({platform.machine()})"),
        "dataset": "seeded random tiles " + "x".join(map(str, sizes["shape"])),
        "model": "fusion",
        "metric": "validation AUC; forward seconds",
        "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
        "torch": str(torch.__version__),
        **run(sizes, device),
    }
    print(json.dumps(record, indent=1))
    if device != "cuda":
        print("no CUDA GPU here: this ran on the CPU")
    recorder.write(to_rows(record), settings={k: record[k] for k in SETUP_KEYS},
                   title="gpu_ensemble: seed ensembles on the training device")


if __name__ == "__main__":
    main()
