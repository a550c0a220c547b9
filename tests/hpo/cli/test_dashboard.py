"""``hpo dashboard`` in a real browser: headless Chromium lists every stage study.

Needs Debian's ``chromium`` package (``.ci/run`` installs it when apt is available); the
test skips with a reason where it is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hpo import LayerwiseSearch
from tests.hpo.cli.test_cli import ROOT, free_port
from tests.hpo.conftest import quadratic, two_stages

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without the background-networking flags Chromium waits for the network on a closed
# machine; --no-sandbox because CI runs as root.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",
]

pytestmark = pytest.mark.browser


@pytest.fixture
def finished_search(tmp_path: Path) -> str:
    """A finished two-stage search in SQLite (a cheap objective: no training)."""
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    LayerwiseSearch(
        two_stages(n_random=2, n_bayes=1), quadratic, storage=url, study_name="dash", seed=0,
        metric="f1",
    ).run()
    return url


def wait_until_serving(url: str, proc: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"hpo dashboard exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"hpo dashboard did not serve {url} within {seconds} s")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (apt-get install chromium); .ci/run installs it",
)
def test_headless_chromium_sees_every_stage_study(finished_search, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo.cli", "dashboard", finished_search, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    page = f"http://127.0.0.1:{port}/dashboard"
    try:
        wait_until_serving(page, proc)
        dom = chromium(tmp_path, "--dump-dom", page)
        analytics = chromium(tmp_path, "--dump-dom", f"{page}/studies/1/analytics")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    # Bound to this machine only unless --host says otherwise.
    assert f"http://127.0.0.1:{port}/" in out
    assert "warning" not in out
    # The page is rendered by JavaScript: the study names exist only after it ran.
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name in ("dash.01.first", "dash.02.second"):
        assert name in dom.stdout, f"{name} is not on the rendered page"
    # The stage study's value is named by the search's metric, not "Objective 0".
    text = re.sub(r"<[^>]*>", " ", analytics.stdout)
    assert "EDF for f1" in text, text[-2000:]
    assert "Objective 0" not in text
