"""A search driver with the parallel local runner, run as a subprocess by the tests.

Usage: python _parallel_driver.py STORAGE NAME CALLS_FILE SLEEP WORKERS

Every objective call appends ``start <trial> <pid>`` to CALLS_FILE, sleeps, and appends
``done <trial> <value>``. Ctrl-C (SIGINT) ends it with exit code 130 after the runner has
recorded the trials in flight as interrupted.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

import optuna  # noqa: E402
from optuna.distributions import FloatDistribution  # noqa: E402

from benchmarks.reliability.chaos_kit import append_line  # noqa: E402
from hpo import LayerwiseSearch, LocalRunner, Stage  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Slow:
    """``(x - 0.3)^2`` after a pause, logged (a class: it pickles by reference)."""

    def __init__(self, calls: Path, sleep: float) -> None:
        self.calls = calls
        self.sleep = sleep

    def __call__(self, params: dict, trial) -> float:
        append_line(self.calls, f"start {trial.number} {os.getpid()}")
        time.sleep(self.sleep)
        value = (params["x"] - 0.3) ** 2
        append_line(self.calls, f"done {trial.number} {value!r}")
        return value


def main() -> int:
    storage, name, calls, sleep, workers = sys.argv[1:6]
    search = LayerwiseSearch(
        [Stage("s", {"x": FloatDistribution(0, 1)}, defaults={"x": 0.5}, n_random=4,
               n_bayes=4)],
        Slow(Path(calls), float(sleep)),
        storage=storage,
        study_name=name,
        sampler="tpe",
        direction="minimize",
        runner=LocalRunner(workers=int(workers)),
        lease_seconds=10,
    )
    try:
        search.run()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    print("finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
