"""A search driver run as a subprocess by the resume and multi-driver tests.

Usage: python _driver.py STORAGE NAME CALLS_FILE SLEEP LEASE_SECONDS

Every objective call appends ``start <stage> <trial>`` to CALLS_FILE, sleeps, then
appends ``done <stage> <trial> <value>``: the tests count evaluations through it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import optuna  # noqa: E402

from hpo import LayerwiseSearch  # noqa: E402
from tests.hpo.conftest import quadratic, two_stages  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def main() -> None:
    storage, name, calls, sleep, lease = sys.argv[1:6]
    calls_path = Path(calls)

    def log(line: str) -> None:
        # O_APPEND writes of one short line are atomic between processes.
        fd = os.open(calls_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (line + "\n").encode())
        os.close(fd)

    def objective(params: dict, trial) -> float:
        log(f"start {trial.stage} {trial.number} {os.getpid()}")
        time.sleep(float(sleep))
        value = quadratic(params)
        log(f"done {trial.stage} {trial.number} {value!r}")
        return value

    search = LayerwiseSearch(
        two_stages(n_random=3, n_bayes=3, sampler="tpe"),
        objective,
        storage=storage,
        study_name=name,
        seed=1,
        lease_seconds=float(lease),
    )
    result = search.run()
    print(json.dumps({"best_params": result.best_params, "best_value": result.best_value}))


if __name__ == "__main__":
    main()
