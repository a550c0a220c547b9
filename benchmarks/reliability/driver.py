"""A search driver run as a subprocess by the chaos and concurrency benchmarks and tests.

Started by :mod:`benchmarks.reliability.chaos_kit` (and the resume and multi-driver tests)
as a script, so a SIGKILL takes one process.

Usage: python benchmarks/reliability/driver.py STORAGE NAME CALLS_FILE SLEEP LEASE_SECONDS [options]

Every objective call appends ``start <stage> <trial> <pid>`` to CALLS_FILE, sleeps, then
appends ``done <stage> <trial> <value>``; after the engine has stored a trial's outcome
the driver appends ``told <stage> <trial> <STATE> <value> <pid>``. With ``--export`` it
writes the best configuration after the search, between ``export-start <pid>`` and
``export-done <pid>``. The tests count evaluations and outcomes through these lines.
Options: ``--n-random``, ``--n-bayes`` (per stage, default 3 and 3), ``--refine N`` (a
refine stage: its incumbent and N Bayesian trials), ``--export PATH``, ``--isolate``
and ``--trial-timeout S`` (trials in child processes), ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import optuna  # noqa: E402

from benchmarks.reliability.chaos_kit import append_line, quadratic, two_stages  # noqa: E402
from hpo import LayerwiseSearch  # noqa: E402
from hpo.study.export import export_best  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Objective:
    """The quadratic of the engine tests, slowed down and logged (a class: it pickles)."""

    def __init__(self, calls: Path, sleep: float) -> None:
        self.calls = calls
        self.sleep = sleep

    def __call__(self, params: dict, trial) -> float:
        append_line(self.calls, f"start {trial.stage} {trial.number} {os.getpid()}")
        time.sleep(self.sleep)
        value = quadratic(params)
        append_line(self.calls, f"done {trial.stage} {trial.number} {value!r}")
        return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storage")
    parser.add_argument("name")
    parser.add_argument("calls", type=Path)
    parser.add_argument("sleep", type=float)
    parser.add_argument("lease", type=float)
    parser.add_argument("--n-random", type=int, default=3)
    parser.add_argument("--n-bayes", type=int, default=3)
    parser.add_argument("--refine", type=int, default=None)
    parser.add_argument("--export", type=Path, default=None)
    parser.add_argument("--isolate", action="store_true")
    parser.add_argument("--trial-timeout", type=float, default=None)
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args(sys.argv[1:])
    pid = os.getpid()

    def told(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        stage = study.study_name.split(".")[2]  # <name>.<NN>.<stage>
        append_line(
            args.calls, f"told {stage} {trial.number} {trial.state.name} {trial.value!r} {pid}"
        )

    search = LayerwiseSearch(
        two_stages(n_random=args.n_random, n_bayes=args.n_bayes, sampler="tpe"),
        Objective(args.calls, args.sleep),
        storage=args.storage,
        study_name=args.name,
        seed=args.seed,
        lease_seconds=args.lease,
        refine=args.refine,
        callbacks=[told],
        isolate=args.isolate,
        trial_timeout=args.trial_timeout,
    )
    result = search.run()
    if args.export is not None:
        append_line(args.calls, f"export-start {pid}")
        export_best(search, args.export)
        append_line(args.calls, f"export-done {pid}")
    print(json.dumps({"best_params": result.best_params, "best_value": result.best_value}))


if __name__ == "__main__":
    main()
