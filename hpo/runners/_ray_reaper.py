"""Stops a local Ray instance's processes when the driver that started it dies.

Run as a script (``python _ray_reaper.py TOKEN``; it imports nothing of the toolkit) in
its own session, with a pipe from the driver on stdin. The driver starts Ray with
``HPO_RAY_OWNER=TOKEN`` in its environment, which every Ray process of that instance
inherits (GCS, raylet, agents, workers). When the pipe closes (the driver exited, was
killed with SIGKILL, or closed it on purpose), the reaper sends SIGTERM, then SIGKILL,
to every process whose environment carries the token. Ray's own fate sharing stops the
GCS and the raylet with the driver, but not the agents and workers they started.
"""

from __future__ import annotations

import os
import signal
import sys
import time

ENV_VAR = "HPO_RAY_OWNER"


def owned_processes(token: str) -> list[int]:
    """PIDs of processes whose environment has ``HPO_RAY_OWNER=token`` (Linux /proc)."""
    needle = f"{ENV_VAR}={token}".encode()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


def stop(token: str, grace: float = 2.0) -> list[int]:
    """SIGTERM the token's processes, SIGKILL what is left after ``grace`` seconds."""
    pids = owned_processes(token)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and owned_processes(token):
        time.sleep(0.1)
    for pid in owned_processes(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


def main() -> None:
    """Wait for stdin to close, then stop the token's processes."""
    token = sys.argv[1]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the driver
    try:
        while sys.stdin.buffer.read(1024):
            pass
    except OSError:
        pass
    stop(token)


if __name__ == "__main__":
    main()
