"""Confirmation runs: does a stage hand on a real gain when its challenger ran beside the incumbent?

With intensification (``[tuning] max_repeats``) a challenger that beats the stage's
incumbent after ``repeats`` replicates, but not yet by ``switch_z``, earns more replicates,
paired with the incumbent's. With several workers a challenger often starts while the
incumbent is still being measured, so it has nothing to pair with and stops at
``repeats``; the barrier then gives the stage's best such a challenger a *confirmation
run* (``hpo.engine.replicates.to_confirm``). This measures what that buys, on a simulated
objective whose truth is known (no network is trained): a stage of three trials, the
incumbent and two random draws of {incumbent, challenger}, the challenger better by
``gain`` with noise sd 0.1 per replicate, ``repeats = 3``, ``max_repeats = 8``, run

- ``sequential``: one worker (every challenger can pair: the reference);
- ``parallel``: two workers, no confirmation runs (the engine before them);
- ``parallel + confirmation``: two workers, as the engine runs now.

Per gain and setting: the share of searches that handed the challenger on (among those
that tried it: with gain 0 that is the false-positive rate), and the replicates trained.

    python -m benchmarks.experiments.confirmation                 # 40 searches a cell
    python -m benchmarks.experiments.confirmation --quick         # 6, a check of the script

Results: ``benchmarks/results/confirmation.{json,md}``. Not part of CI.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import Row, Run, add_common_flags, results_dir

SD = 0.1
GAINS = (0.0, 0.1, 0.15)
SETTINGS = {"sequential": (1, True), "parallel": (2, False),
            "parallel + confirmation": (2, True)}
REPEATS, MOST = 3, 8
# each replicate takes this long, so that two workers' trials overlap as trainings do
REPLICATE_SECONDS = 0.05


def contest(gain: float, params: dict[str, Any], trial: Any) -> float:
    """One replicate: the challenger's mean is ``0.5 + gain``, each run with its own noise."""
    time.sleep(REPLICATE_SECONDS)
    challenger = params["kind"] == "challenger"
    rng = np.random.default_rng([trial.replicate_seed, challenger])
    return 0.5 + (gain if challenger else 0.0) + SD * float(rng.standard_normal())


def one_search(gain: float, workers: int, confirm: bool, seed: int, folder: Path
               ) -> dict[str, Any]:
    """Run one stage; whether it tried and handed on the challenger, and its replicates."""
    from optuna.distributions import CategoricalDistribution

    from hpo import LayerwiseSearch, Stage
    from hpo.engine import replicates
    from hpo.engine.runners.local import LocalRunner

    stage = Stage("s", {"kind": CategoricalDistribution(["incumbent", "challenger"])},
                  defaults={"kind": "incumbent"}, n_random=3, n_bayes=0)
    saved = replicates.MAX_CONFIRMATIONS
    replicates.MAX_CONFIRMATIONS = saved if confirm else 0  # read by the barrier
    try:
        result = LayerwiseSearch(
            [stage], functools.partial(contest, gain), seed=seed, sampler="random",
            storage=f"sqlite:///{folder / f's{seed}.db'}", study_name="s",
            runner=LocalRunner(workers=workers),
            replication=replicates.Replication(repeats=REPEATS, racing=False,
                                               max_repeats=MOST)).run()
    finally:
        replicates.MAX_CONFIRMATIONS = saved
    trials = result.stages[0].study.get_trials(deepcopy=False)
    gone = replicates.superseded(trials)
    runs = sum(len(replicates.replicates_of(t)) for t in trials if t.number not in gone)
    return {"tried": any(t.params["kind"] == "challenger" for t in trials),
            "handed_on": result.stages[0].ledger.params["kind"] == "challenger",
            "replicates": runs,
            "confirmations": sum(replicates.CONFIRMS_ATTR in t.user_attrs for t in trials)}


def run(searches: int) -> list[dict[str, Any]]:
    """Every (gain, setting) cell over ``searches`` seeded searches."""
    cells = []
    for gain in GAINS:
        for name, (workers, confirm) in SETTINGS.items():
            with tempfile.TemporaryDirectory() as tmp:
                found = [one_search(gain, workers, confirm, seed, Path(tmp))
                         for seed in range(searches)]
            tried = [f for f in found if f["tried"]]
            cell = {"gain": gain, "setting": name, "searches": len(found),
                    "tried": len(tried),
                    "handed_on_share": (sum(f["handed_on"] for f in tried) / len(tried)
                                        if tried else None),
                    "replicates_mean": statistics.fmean(f["replicates"] for f in found),
                    "confirmations_mean": statistics.fmean(f["confirmations"] for f in found)}
            cells.append(cell)
            print(cell, flush=True)
    return cells


def markdown(cells: list[dict[str, Any]]) -> str:
    lines = [f"A stage of 3 trials, the challenger better by `gain` at sd {SD} a replicate, "
             f"repeats {REPEATS}, max_repeats {MOST}, switch_z 2. Share of the searches that "
             "tried the challenger and handed it on; replicates trained per search.", "",
             "| gain | setting | searches (tried) | handed on | replicates | confirmations |",
             "| --- | --- | --- | --- | --- | --- |"]
    for c in cells:
        share = "-" if c["handed_on_share"] is None else f"{c['handed_on_share']:.0%}"
        lines.append(f"| {c['gain']:+.2f} | {c['setting']} | {c['searches']} ({c['tried']}) | "
                     f"{share} | {c['replicates_mean']:.1f} | {c['confirmations_mean']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the cells and write ``<out>/confirmation.json`` and ``.md``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_flags(p, seed=None)
    p.add_argument("--searches", type=int, default=40, help="seeded searches per cell")
    args = p.parse_args()
    recorder = Run("confirmation", results_dir(args))
    cells = run(6 if args.quick else args.searches)
    rows = [Row("confirmation", f"simulated contest, gain {c['gain']:+.2f}", c["setting"], k,
                c[k], "", {"searches": c["searches"], "tried": c["tried"]})
            for c in cells for k in ("handed_on_share", "replicates_mean",
                                     "confirmations_mean")]
    print(markdown(cells))
    recorder.write(rows, settings={"sd": SD, "repeats": REPEATS, "max_repeats": MOST,
                                   "gains": list(GAINS)},
                   details={"cells": cells}, markdown=markdown(cells),
                   title="Confirmation runs on a simulated contest")


if __name__ == "__main__":
    main()
