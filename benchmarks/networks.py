"""Size, speed and memory of the fusion network and the baselines.

For every model: parameter count, forward+backward throughput in pixels/s (median of a
few repetitions after warm-up, the models interleaved round-robin in one process; also as
a ratio to SegNet measured in the same run) and peak memory, at batch 4 of random
``(S=8, T=5, 128, 128)`` cubes. Memory is measured per model in a fresh subprocess: the
growth of the peak resident set size on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.

    python -m benchmarks.networks            # full run, writes benchmarks/results/networks.*
    python -m benchmarks.networks --quick    # 32 x 32, seconds; prints the table only
    python -m benchmarks.networks --device cuda
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DATASET = "synthetic-random"
BATCH, SOURCES, TIMES = 4, 8, 5
RESULTS = Path(__file__).resolve().parent / "results"


def _max_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Workload:
    """One model with a fixed random batch, ready to run forward+backward steps."""

    def __init__(self, model_name: str, size: int, device: str) -> None:
        import torch

        from networks import build_model

        torch.manual_seed(0)
        self.torch = torch
        self.device = torch.device(device)
        self.name = model_name
        self.pixels = BATCH * size * size
        self.x = torch.randn(BATCH, SOURCES, TIMES, size, size, device=self.device)
        self.y = (torch.rand(BATCH, size, size, device=self.device) < 0.05).long()
        self.model = build_model(model_name, SOURCES, TIMES).to(self.device).train()
        self.params = sum(p.numel() for p in self.model.parameters())

    def step(self) -> float:
        """One forward+backward pass; returns its wall-clock seconds."""
        from networks import fusion_loss

        cuda = self.device.type == "cuda"
        start = time.perf_counter()
        self.model.zero_grad(set_to_none=True)
        with self.torch.autocast(self.device.type, enabled=cuda):
            logits = self.model(self.x)
        fusion_loss(logits, self.y).backward()
        if cuda:
            self.torch.cuda.synchronize()
        return time.perf_counter() - start


def peak_memory(model_name: str, size: int, device: str, threads: int) -> dict:
    """Parameters and peak memory of one model (run in a fresh process for a clean RSS)."""
    import torch

    torch.set_num_threads(threads)
    rss_before = _max_rss_mib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    work = _Workload(model_name, size, device)
    for _ in range(2):  # the second step also holds the gradients of the first
        work.step()
    if device == "cuda":
        return {"params": work.params, "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20}
    return {"params": work.params, "peak_memory_mib": _max_rss_mib() - rss_before}


def throughput(
    model_names: list[str], size: int, device: str, reps: int, warmup: int, threads: int
) -> dict[str, float]:
    """Median seconds per forward+backward step of each model, measured round-robin.

    Interleaving the models' repetitions exposes all of them to the same background load,
    which keeps their ratios meaningful on a shared machine.
    """
    import torch

    torch.set_num_threads(threads)
    works = [_Workload(name, size, device) for name in model_names]
    for work in works:
        for _ in range(warmup):
            work.step()
    times: dict[str, list[float]] = {work.name: [] for work in works}
    for _ in range(reps):
        for work in works:
            times[work.name].append(work.step())
    return {name: statistics.median(values) for name, values in times.items()}


def _memory_in_subprocess(model_name: str, args: argparse.Namespace, size: int) -> dict:
    command = [
        sys.executable, "-m", "benchmarks.networks", "--child", model_name,
        "--device", args.device, "--threads", str(args.threads), "--size", str(size),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"memory benchmark of {model_name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _records(rows: list[dict], reference: float) -> list[dict[str, Any]]:
    records = []
    for row in rows:
        metrics = {
            "params": row["params"],
            "pixels_per_s": row["pixels_per_s"],
            "pixels_per_s_ratio_to_segnet": row["pixels_per_s"] / reference,
            "seconds_per_step": row["seconds_per_step"],
            "peak_memory_mib": row["peak_memory_mib"],
        }
        for metric, value in metrics.items():
            records.append({"dataset": DATASET, "model": row["model"], "metric": metric,
                            "value": value})  # fmt: skip
    return records


def _markdown(rows: list[dict], reference: float, setup: dict[str, Any]) -> str:
    memory = "peak CUDA memory" if setup["device"] == "cuda" else "peak RSS delta"
    lines = [
        f"# networks benchmark ({DATASET})",
        "",
        f"Batch {BATCH} of (S={SOURCES}, T={TIMES}, {setup['size']}, {setup['size']}), "
        f"forward + backward, device {setup['device']} ({setup['device_name']}), "
        f"{setup['threads']} thread(s), median of {setup['reps']} round-robin repetitions "
        "after warm-up; "
        f"torch {setup['torch']}, {setup['date']}.",
        "",
        f"| model | parameters | pixels/s | × SegNet | s/step | {memory} (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['params']:,} | {row['pixels_per_s']:,.0f} | "
            f"{row['pixels_per_s'] / reference:.2f} | {row['seconds_per_step']:.3f} | "
            f"{row['peak_memory_mib']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def _device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.networks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="32 x 32 inputs, fewer reps")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per model")
    parser.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="folder for networks.json / networks.md (default: "
        "benchmarks/results for a full run, none for --quick)",
    )
    args = parser.parse_args(argv)
    size = args.size or (32 if args.quick else 128)
    reps = args.reps or (3 if args.quick else 5)

    if args.child:
        print(json.dumps(peak_memory(args.child, size, args.device, args.threads)))
        return
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device visible to torch")

    from networks import NETWORK_NAMES

    names = list(NETWORK_NAMES)
    rows = []
    for name in names:
        rows.append({"model": name, **_memory_in_subprocess(name, args, size)})
        print(f"{name}: {rows[-1]['peak_memory_mib']:,.0f} MiB peak", file=sys.stderr)
    seconds = throughput(names, size, args.device, reps, warmup=1, threads=args.threads)
    for row in rows:
        row["seconds_per_step"] = seconds[row["model"]]
        row["pixels_per_s"] = BATCH * size * size / seconds[row["model"]]
    reference = next(r["pixels_per_s"] for r in rows if r["model"] == "segnet")
    import torch

    setup = {
        "dataset": DATASET, "batch": BATCH, "sources": SOURCES, "times": TIMES, "size": size,
        "device": args.device, "device_name": _device_name(args.device),
        "threads": args.threads, "reps": reps, "torch": str(torch.__version__),
        "date": datetime.date.today().isoformat(),
    }  # fmt: skip
    table = _markdown(rows, reference, setup)
    print(table)
    output = args.output if args.output is not None else (None if args.quick else RESULTS)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        payload = {"setup": setup, "results": _records(rows, reference)}
        (output / "networks.json").write_text(json.dumps(payload, indent=2) + "\n")
        (output / "networks.md").write_text(table)
        print(f"wrote {output / 'networks.json'} and {output / 'networks.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
