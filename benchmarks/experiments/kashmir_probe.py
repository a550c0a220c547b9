"""What limits the factors-only Kashmir model: one training choice at a time, at the defaults.

Each probe changes one thing against the study's defaults (its ``[model.fixed]`` plus every
stage parameter's default) and trains 3 seeds on the study's blocked split. Reported on the
test split: F1 at the threshold chosen on validation (what ``hpo compare`` reports), F1 at
0.5, AUC, and the *oracle* F1, at the threshold that is best on the test split itself: an
upper bound that no threshold rule can pass, so a gap between probes in it is a gap in
ranking, not in thresholding. For the networks, ``halo`` gives the same metrics when each
test tile is predicted with 32 px of surrounding input (as ``hpo predict`` maps do), to
measure what the tile edges cost.

    python -m benchmarks.experiments.kashmir_probe    # writes benchmarks/results/kashmir_probe.*
    python -m benchmarks.experiments.kashmir_probe --seeds 1 --probes defaults hgb
    python -m benchmarks.experiments.kashmir_probe --quick   # the defaults, 1 seed; prints

Probes named with ``--probes`` replace their own rows of the recorded table; the others stay.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Row, Run, add_common_flags, results_dir

DATASET = "kashmir-inventory-sepwc"
STUDY = Path(__file__).resolve().parents[2] / "studies" / "kashmir.toml"
HALO = 32
TITLE = "Kashmir, factors only: one choice at a time (test split, mean ± std over seeds)"
# every DEM derivative of data.terrain, at gully, hillslope and valley-side scales
TERRAIN = {"derive": ["slope", "aspect", "curvature", "roughness", "tpi"], "tpi_radii": [4, 16, 64]}
# name -> (data overrides, parameter overrides, train_on, model)
PROBES: dict[str, tuple[dict[str, Any], dict[str, Any], str, str]] = {
    "defaults": ({}, {}, "train", "fusion"),
    "20 epochs": ({}, {"optim.epochs": 20}, "train", "fusion"),
    "20 epochs, pos_weight 10": ({}, {"optim.epochs": 20, "head.pos_weight": 10.0}, "train",
                                 "fusion"),
    "dcnn width 64": ({}, {"dcnn.width": 64}, "train", "fusion"),
    "dcnn dilation 4": ({}, {"dcnn.dilation": 4}, "train", "fusion"),
    "dropout 0.3, lr 5e-4": ({}, {"head.dropout": 0.3, "optim.lr": 5e-4}, "train", "fusion"),
    "focal 2, positive tiles 0.5": ({}, {"head.focal_gamma": 2.0, "head.positive_tiles": 0.5},
                                    "train", "fusion"),
    "96-px tiles (same blocks)": ({"patch_size": 96, "block_size": 2}, {}, "train", "fusion"),
    "32-px tiles (same blocks)": ({"patch_size": 32, "block_size": 6}, {}, "train", "fusion"),
    "trained on train+val": ({}, {}, "train+val", "fusion"),
    "weight decay 1e-2": ({}, {"optim.weight_decay": 1e-2}, "train", "fusion"),
    "inputs clipped at 3 scales": ({"clip": 3}, {}, "train", "fusion"),
    "terrain: curvature, roughness, TPI 4/16/64 px": (TERRAIN, {}, "train", "fusion"),
    "hgb": ({}, {}, "train", "hgb"),
    "hgb, terrain as above": (TERRAIN, {}, "train", "hgb"),
}


def _test_scores(model: Any, final: Any, halo: int, threshold: float | None) -> dict[str, float]:
    """Test metrics of the valid test pixels, each tile read with ``halo`` px more input.

    ``f1`` is at ``threshold`` (0.5 without one); ``oracle_f1`` at the threshold best on the
    test pixels themselves (the meter's ``f1_best``).
    """
    from data.tiles import Tile
    from networks import SegmentationMeter, model_device
    from networks.inference import landslide_log_odds

    cube = final.cube
    height, width = cube.labels.shape[-2:]
    meter = SegmentationMeter()
    for t in final.splits.test:
        r0, c0 = max(0, t.row - halo), max(0, t.col - halo)
        r1, c1 = min(height, t.row + t.height + halo), min(width, t.col + t.width + halo)
        big = Tile(r0, c0, r1 - r0, c1 - c0, max(r1 - r0, c1 - c0))
        x, y, valid = cube.dataset([big], norm=final.norm)[0]
        scores = landslide_log_odds(model, x[None].to(model_device(model)))[0].cpu()
        inner = (slice(t.row - r0, t.row - r0 + t.height), slice(t.col - c0, t.col - c0 + t.width))
        # log-odds, not probabilities: saturated boosting scores would tie (see SegmentationMeter)
        meter.update_log_odds(scores[inner], y[inner], valid[inner])
    scores = meter.compute()
    return {"f1": meter.at(threshold if threshold is not None else 0.5)["f1"],
            "f1@0.5": scores["f1"], "auc": scores["auc"], "oracle_f1": scores["f1_best"]}


def run_probe(spec: Any, name: str, seeds: int) -> dict[str, Any]:
    """Train one probe's configuration ``seeds`` times; its test metrics per seed."""
    import networks
    from hpo import study as st
    from hpo.study.compare import defaults_of
    from networks.config import ModelConfig
    from networks.metrics import validation_threshold

    data, params, train_on, model = PROBES[name]
    # context 0: the probes measure tiles cut from the map; `halo` is what context adds.
    section = st.data_section(spec) | {"context": 0} | data
    final = st.prepare_final_data(section, spec.base_dir, seed=spec.seed, train_on=train_on)
    config = ModelConfig.from_params(dict(spec.model.fixed) | defaults_of(spec) | params)
    runs = []
    for seed in range(seeds):
        started = time.monotonic()
        history = networks.train(config, final.train_set, final.val_set, seed=seed, model=model,
                                 device="cpu")
        threshold = validation_threshold(history)
        run = {"seed": seed, "threshold": threshold, "seconds": 0.0}
        run |= _test_scores(history.model.eval(), final, 0, threshold)
        if model != "hgb":  # the floor's window statistics already read past the tile
            halo = _test_scores(history.model, final, HALO, threshold)
            run |= {f"halo_{k}": v for k, v in halo.items()}
        run["seconds"] = round(time.monotonic() - started, 1)
        runs.append(run)
        print(f"{name} seed {seed}: " + " ".join(
            f"{k} {v:.3f}" for k, v in run.items() if k not in ("seed", "threshold", "seconds")
        ), flush=True)
    return {"probe": name, "model": model, "data": data, "params": params, "train_on": train_on,
            "runs": runs}


def _summary(record: dict[str, Any]) -> dict[str, str]:
    keys = [k for k in record["runs"][0] if k not in ("seed", "threshold", "seconds")]
    out = {}
    for key in keys:
        values = [r[key] for r in record["runs"]]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        out[key] = f"{statistics.mean(values):.3f} ± {spread:.3f}"
    return out


def markdown(records: list[dict[str, Any]]) -> str:
    """The probes as one table, mean ± std over seeds."""
    cols = ["f1", "f1@0.5", "auc", "oracle_f1", "halo_auc", "halo_oracle_f1"]
    lines = ["| probe | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for record in records:
        s = _summary(record)
        lines.append(f"| {record['probe']} | " + " | ".join(s.get(c, "–") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def to_rows(records: list[dict[str, Any]]) -> list[Row]:
    """Per probe, seed and metric (the probe, its seed and what it trained on in setup)."""
    return [
        Row("kashmir_probe", DATASET, record["model"], metric, value,
            "s" if metric == "seconds" else "",
            {"probe": record["probe"], "seed": run["seed"], "train_on": record["train_on"]})
        for record in records
        for run in record["runs"]
        for metric, value in run.items()
        if metric != "seed"
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Run the probes and write ``kashmir_probe.{json,md}``."""
    from hpo import study as st

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser, seed=None)  # --quick: the defaults probe, one seed
    parser.add_argument("--seeds", type=int, default=None, help="seeds per probe (default 3)")
    parser.add_argument("--probes", nargs="+", choices=list(PROBES), default=None)
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 3)
    probes = args.probes or (["defaults"] if args.quick else list(PROBES))
    recorder = Run("kashmir_probe", results_dir(args))
    import torch

    torch.set_num_threads(1)
    spec = st.load_study(STUDY)
    started = time.monotonic()
    fresh = {name: run_probe(spec, name, seeds) for name in probes}
    print(markdown(list(fresh.values())))
    if recorder.out is None:
        return
    recorded = recorder.out / "kashmir_probe.json"
    kept = ({r["probe"]: r for r in json.loads(recorded.read_text())["details"]["probes"]}
            if recorded.exists() else {})
    records = [fresh.get(name) or kept[name] for name in PROBES if name in fresh or name in kept]
    table = markdown(records)
    setup = {"dataset": DATASET, "study": "studies/kashmir.toml", "metric": "test F1, AUC",
             "seeds": seeds, "halo_px": HALO, "machine": f"{platform.machine()}, 1 thread",
             "date": recorder.machine["utc"], "probes_run": list(fresh),
             "invocation_seconds": round(time.monotonic() - started, 1)}
    recorder.write(to_rows(records), settings=setup, details={"probes": records},
                   markdown=table, title=TITLE)


if __name__ == "__main__":
    main()
