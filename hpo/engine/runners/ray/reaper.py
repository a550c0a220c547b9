"""Stops a local Ray instance's processes when the driver that started it dies.

Run as a script (``python _ray_reaper.py TOKEN DRIVER_PID [TEMP_FOLDER]``; it imports
nothing of the toolkit) in its own session, with a pipe from the driver on stdin. While the driver
lives, the reaper notes, about once a second, every process below it that belongs to
Ray: its environment carries ``HPO_RAY_OWNER=TOKEN`` (the driver starts Ray with it, so
the GCS and the raylet have it) or its title starts with ``ray::`` (agents and workers,
which overwrite their environment with that title). When the pipe closes (the driver
exited, was killed with SIGKILL, or closed it on purpose), the reaper sends SIGTERM,
then SIGKILL, to every noted process still alive, and removes the driver's temporary
checkpoint folder. Ray's own fate sharing stops the GCS
and the raylet with the driver, but not the agents and idle workers they started.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import time

ENV_VAR = "HPO_RAY_OWNER"


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a process, ``None`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), fields[19].decode()
    except (OSError, IndexError, ValueError):
        return None


def _is_ray(pid: int, token: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f.read().startswith(b"ray::"):
                return True
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{ENV_VAR}={token}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root`` with its start time."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append((int(entry), stat[1]))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            if pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def note(driver: int, token: str, noted: dict[int, str]) -> None:
    """Add the driver's Ray processes to ``noted``."""
    me = os.getpid()
    for pid, start in descendants(driver).items():
        if pid != me and pid not in noted and _is_ray(pid, token):
            noted[pid] = start


def _alive(noted: dict[int, str]) -> list[int]:
    return [pid for pid, start in noted.items() if (_stat(pid) or (0, None))[1] == start]


def stop(noted: dict[int, str], grace: float = 2.0) -> list[int]:
    """SIGTERM the noted processes still alive, SIGKILL those left after ``grace``."""
    pids = _alive(noted)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(noted):
        time.sleep(0.1)
    for pid in _alive(noted):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


def main() -> None:
    """Note the driver's Ray processes until stdin closes, then stop them."""
    token, driver = sys.argv[1], int(sys.argv[2])
    folder = sys.argv[3] if len(sys.argv) > 3 else ""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the driver
    noted: dict[int, str] = {}
    stdin = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer
    while True:
        try:
            ready, _, _ = select.select([stdin], [], [], 1.0)
        except (OSError, ValueError):
            break
        if ready:
            try:
                if not os.read(stdin.fileno(), 1024):
                    break  # the driver is gone or closed the pipe
            except OSError:
                break
        note(driver, token, noted)
    stop(noted)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
