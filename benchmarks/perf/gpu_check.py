"""GPU check: CUDA training with mixed precision, and fractional-GPU Ray trials.

On a machine with a CUDA GPU, in well under 3 minutes, installing nothing:

1. ``train``: the fusion network trained by ``networks.train`` on ``cuda`` (mixed
   precision: bfloat16 autocast where the GPU has it, float16 with loss scaling
   otherwise), after one warm-up run of the same training (CUDA context, cuDNN
   autotuning), and the same training on the CPU (all its threads): seconds per epoch
   (median after the first epoch, which holds the DBN pretraining) and the peak GPU
   memory.
2. ``ray``: 8 trials of that training through ``RayRunner(gpu=0.25)``, 4 at a time on one
   GPU: trials per hour, the most trials seen training at once, each trial's peak GPU
   memory (``torch.cuda.max_memory_allocated`` inside the trial, reported with its epoch
   metrics into ``hpo:history``) and the device's peak (free memory sampled in the
   driver: the workers' CUDA contexts included).

The data are seeded random tiles held in memory (no raster stack to build). Each part
that fails is recorded with its error and the other still runs; the results are written
after each part, so a run killed at its time limit keeps what it finished. Exits 1 when
a part failed. Without a CUDA GPU it says so and exits 0.

    python -m benchmarks.perf.gpu_check             # writes benchmarks/results/gpu_check.json
    python -m benchmarks.perf.gpu_check --rehearse  # the same path on CPU with a logical GPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks._harness import RESULTS, Row, Run, add_common_flags, melt
from benchmarks.perf.ray_runner import quiet, random_tiles, timed_stage
from hpo import NetworkObjective

MODEL = "fusion"
METRIC = "val_loss"  # timed_stage minimizes
# Default layer sizes. The DBN is pretrained before the first epoch (no warm-up
# epochs), so that every later epoch costs the same and their median is the epoch time.
FIXED = {"optim.batch_size": 8, "dbn.warmup_epochs": 0, "dbn.pretrain_epochs": 1,
         "dbn.max_pixels": 5000}
# Real GPU: 64 training tiles of (S=8, T=5, 64, 64); the rehearsal on a small CPU
# machine only checks the plumbing, so it is tiny.
SIZES = {
    "gpu": {"train": 64, "val": 16, "shape": (8, 5, 64, 64), "epochs": 4, "cpu_epochs": 2},
    "rehearse": {"train": 8, "val": 4, "shape": (3, 2, 16, 16), "epochs": 2, "cpu_epochs": 2},
}
GPU_PER_TRIAL = 0.25
TRIALS = 8
MIB = 2**20


class PeakMemoryObjective(NetworkObjective):
    """The network objective, also reporting the trial's peak GPU memory every epoch.

    Each Ray trial runs in its own worker process, so the CUDA allocator's peak there
    is this trial's alone (reset at the start: reused workers ran other trials before).
    The training's wall-clock start and each report's time go along, so the driver can
    tell how many trials trained at once.
    """

    def __call__(self, params: dict[str, Any], trial: Any) -> float:
        import torch

        on_cuda = torch.cuda.is_available() and self.device == "cuda"
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
        return super().__call__(params, _Reporting(trial, on_cuda, time.time()))


class _Reporting:
    """A trial context whose reports carry the peak GPU memory and wall-clock times."""

    def __init__(self, trial: Any, on_cuda: bool, started: float) -> None:
        self._trial = trial
        self._on_cuda = on_cuda
        self._started = started

    def report(self, epoch: int, value: float | None = None, **metrics: Any) -> None:
        import torch

        peak = torch.cuda.max_memory_allocated() / MIB if self._on_cuda else None
        self._trial.report(epoch, value, **metrics, gpu_peak_mib=peak,
                           on_cuda=float(self._on_cuda), t_start=self._started,
                           t_report=time.time())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


class DeviceMemory:
    """Samples the device's used memory in a thread (all processes, contexts included)."""

    def __init__(self, enabled: bool, interval: float = 0.2) -> None:
        self.enabled = enabled
        self.interval = interval
        self.peak_used = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import torch

        while not self._stop.is_set():
            free, total = torch.cuda.mem_get_info()
            self.peak_used = max(self.peak_used, total - free)
            self._stop.wait(self.interval)

    def __enter__(self) -> DeviceMemory:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()


def _config(epochs: int) -> Any:
    from networks.config import ModelConfig

    return ModelConfig.from_params({**FIXED, "optim.epochs": epochs})


def timed_train(train_set: Any, val_set: Any, epochs: int, device: str) -> dict[str, Any]:
    """One ``networks.train`` run on ``device``: seconds per epoch, peak GPU memory."""
    import torch

    from networks import train

    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ends: list[float] = []
    start = time.perf_counter()
    history = train(_config(epochs), train_set, val_set, seed=0, model=MODEL, device=device,
                    callbacks=[lambda done, metrics: ends.append(time.perf_counter())])
    epoch_s = [b - a for a, b in zip([start, *ends], ends, strict=False)]
    last = history.epochs[-1]
    return {
        "device": device,
        "threads": torch.get_num_threads(),
        "epochs": len(epoch_s),
        "first_epoch_s": epoch_s[0],
        "epoch_s": statistics.median(epoch_s[1:]),
        "total_s": ends[-1] - start,
        "train_loss": last["train_loss"],
        "val_loss": last["val_loss"],
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / MIB if cuda else None,
    }


def check_train(data: tuple, sizes: dict[str, Any], device: str) -> dict[str, Any]:
    """Part 1: the same training on ``device`` and on the CPU."""
    import torch

    from networks.precision import Precision

    # The first run in a process also pays for the CUDA context and cuDNN's autotuning;
    # the second is what every later trial of a reused Ray worker costs.
    cold = timed_train(*data, sizes["epochs"], device)
    on_device = {**timed_train(*data, sizes["epochs"], device),
                 "cold_first_epoch_s": cold["first_epoch_s"], "cold_total_s": cold["total_s"]}
    if device == "cuda":
        on_device["autocast_dtype"] = str(Precision(torch.device("cuda")).dtype)
        torch.cuda.empty_cache()  # leave the GPU to the Ray trials
    on_cpu = timed_train(*data, sizes["cpu_epochs"], "cpu")
    return {"device": on_device, "cpu": on_cpu,
            "cpu_vs_device_epoch": on_cpu["epoch_s"] / on_device["epoch_s"]}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals overlapping at one time."""
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    running = best = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


def check_ray(data: tuple, sizes: dict[str, Any], device: str,
              train_s: float | None) -> dict[str, Any]:
    """Part 2: fractional-GPU trials through the ray runner."""
    from hpo.engine.context import HISTORY_ATTR
    from hpo.engine.runners.ray.runner import RayRunner

    # Two threads per trial where the machine has the cores for 4 trials; a small
    # machine (the rehearsal) shares its cores.
    cpu = min(2.0, (os.cpu_count() or 1) / 4)
    concurrent = round(1 / GPU_PER_TRIAL)
    # One GPU for the 4 trials, also on a multi-GPU machine: that is the packing checked.
    # The runner starts Ray (and stops it, with every worker, when the stage ends).
    runner = RayRunner(cpu=cpu, gpu=GPU_PER_TRIAL, max_concurrent=concurrent, num_gpus=1,
                       log_to_driver=False)
    objective = PeakMemoryObjective(*data, model=MODEL, metric=METRIC,
                                    base_config=_config(sizes["epochs"]), device=device, seed=0)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp, \
            DeviceMemory(device == "cuda") as memory:
        timing, stage = timed_stage(objective, TRIALS, runner, "network-gpu", Path(tmp))
    rows = [t.user_attrs[HISTORY_ATTR] for t in stage.study.trials if t.value is not None]
    peaks = [h[-1]["gpu_peak_mib"] for h in rows if h[-1]["gpu_peak_mib"] is not None]
    return {
        "cpu_per_trial": cpu,
        "gpu_per_trial": GPU_PER_TRIAL,
        "max_concurrent": concurrent,
        **timing,
        "trials_per_hour": 3600 * TRIALS / timing["wall_s"],
        # One warm process training the same trials back to back, without Ray (part 1).
        "sequential_trials_per_hour": 3600 / train_s if train_s else None,
        "trials_on_cuda": sum(h[-1]["on_cuda"] == 1.0 for h in rows),
        "most_trials_at_once": most_at_once([(h[-1]["t_start"], h[-1]["t_report"])
                                              for h in rows]),
        "trial_train_s": statistics.median(h[-1]["t_report"] - h[-1]["t_start"] for h in rows),
        "trial_peak_gpu_mib": max(peaks) if peaks else None,
        "trial_peak_gpu_mib_median": statistics.median(peaks) if peaks else None,
        "device_peak_used_mib": memory.peak_used / MIB if memory.enabled else None,
    }


def _setup(device: str) -> dict[str, Any]:
    import ray
    import torch

    setup = {
        "device": device,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "ray": ray.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "model": MODEL,
        "metric": METRIC,
        "model_fixed": FIXED,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        setup.update(gpu=props.name, gpu_memory_mib=props.total_memory / MIB,
                     gpus=torch.cuda.device_count())
    return setup


def _run_part(record: dict[str, Any], name: str, fn: Any, *args: Any) -> None:
    print(f"{name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        record[name] = fn(*args)
    except Exception as exc:  # noqa: BLE001 - recorded; the other part still runs
        traceback.print_exc()
        record[name] = {"error": f"{type(exc).__name__}: {exc}"}
    record[name]["part_s"] = time.perf_counter() - start


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} MiB"


def _summary(record: dict[str, Any], device: str) -> str:
    lines = [f"gpu_check on {record['setup'].get('gpu', device)} ({record['total_s']:.0f} s)"]
    train = record.get("train", {})
    if "error" in train:
        lines.append(f"  train: FAILED: {train['error']}")
    elif train:
        d, c = train["device"], train["cpu"]
        lines.append(
            f"  train: {d['epoch_s']:.3f} s/epoch on {device} "
            f"({d.get('autocast_dtype', 'float32')}, peak {_mib(d['peak_gpu_mib'])}) vs "
            f"{c['epoch_s']:.3f} s/epoch on cpu ({c['threads']} threads): "
            f"{train['cpu_vs_device_epoch']:.1f}x"
        )
    ray = record.get("ray", {})
    if "error" in ray:
        lines.append(f"  ray: FAILED: {ray['error']}")
    elif ray:
        lines.append(
            f"  ray: {ray['trials']} trials, gpu={ray['gpu_per_trial']} cpu={ray['cpu_per_trial']}"
            f": {ray['trials_per_hour']:.0f} trials/h (wall {ray['wall_s']:.1f} s), "
            f"{ray['most_trials_at_once']} at once, {ray['trials_on_cuda']} on cuda, "
            f"trial peak {_mib(ray['trial_peak_gpu_mib'])}, device peak "
            f"{_mib(ray['device_peak_used_mib'])}"
        )
    return "\n".join(lines)


def to_rows(record: dict[str, Any]) -> list[Row]:
    """Per part (``train`` on the device and on the CPU, ``ray``) and measure.

    A part that failed is one row, its ``error``.
    """
    shape = record["setup"]["sizes"]["shape"]
    dataset = "random-tiles-" + "x".join(str(n) for n in shape)
    parts = []
    for name in ("train", "ray"):
        part = record.get(name)
        if part is None:
            continue
        if "error" in part:
            parts.append({"part": name, "model": MODEL, "error": part["error"]})
        elif name == "train":
            parts += [{**part[on], "part": "train", "model": MODEL, "on": on}
                      for on in ("device", "cpu")]  # fmt: skip
            parts.append({"part": "train", "model": MODEL, "on": "ratio",
                          "cpu_vs_device_epoch": part["cpu_vs_device_epoch"]})
        else:
            parts.append({**part, "part": "ray", "model": MODEL})
    return melt("gpu_check", parts, dataset=dataset, model_key="model",
                setup_keys=("part", "on", "device", "threads"))


def main(argv: list[str] | None = None) -> None:
    """Run the check on a CUDA GPU; say so and return (exit 0) without one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser, seed=None)  # --quick: the rehearsal's sizes on the GPU
    parser.add_argument("--rehearse", action="store_true",
                        help="run the GPU path on CPU with a logical GPU (tests this script; "
                             "writes only with --out)")
    args = parser.parse_args(argv)
    import torch

    if not args.rehearse and not torch.cuda.is_available():
        why = ("this torch build has no CUDA" if torch.version.cuda is None
               else f"no CUDA device visible (CUDA_VISIBLE_DEVICES="
                    f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        print(f"gpu_check: no CUDA GPU ({why}; torch {torch.__version__}): nothing to check.")
        return
    quiet()
    device = "cpu" if args.rehearse else "cuda"
    sizes = SIZES["rehearse" if args.rehearse or args.quick else "gpu"]
    recorder = Run("gpu_check", args.out if args.out or args.rehearse or args.quick
                   else RESULTS)
    data = (random_tiles(sizes["train"], 0, sizes["shape"]),
            random_tiles(sizes["val"], 1, sizes["shape"]))
    start = time.perf_counter()
    record: dict[str, Any] = {"setup": {**_setup(device), "sizes": sizes}}

    def save() -> None:
        record["total_s"] = time.perf_counter() - start
        recorder.write(to_rows(record), settings=record["setup"],
                       details={"total_s": record["total_s"]},
                       markdown="```\n" + _summary(record, device) + "\n```\n",
                       title="gpu_check: CUDA training and fractional-GPU Ray trials")

    _run_part(record, "train", check_train, data, sizes, device)
    save()
    train_s = record["train"].get("device", {}).get("total_s")
    _run_part(record, "ray", check_ray, data, sizes, device, train_s)
    save()
    # The summary last: a caller that keeps only the output's tail still sees it.
    print(json.dumps(record, indent=2))
    print(_summary(record, device))
    if any("error" in record[part] for part in ("train", "ray")):
        sys.exit(1)


if __name__ == "__main__":
    main()
