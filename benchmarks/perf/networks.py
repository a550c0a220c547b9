"""Size, speed and memory of the fusion network and the baselines.

For every model: parameter count, forward+backward throughput in pixels/s (median of a
few repetitions after warm-up, the models interleaved round-robin in one process, CPU
seconds on CPU and wall seconds on CUDA; also as
a ratio to SegNet measured in the same run) and peak memory, at batch 4 of random
``(S=8, T=5, 128, 128)`` cubes. Memory is measured per model in a fresh subprocess: the
growth of the peak resident set size on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.

The fusion network appears twice: ``fusion`` at today's defaults (its DCNN branch a
dilation pyramid on a downsampled grid) and ``fusion-narrow``, the defaults before it
(four full-resolution blocks dilated 1, 2, 1, 2); ratios to ``fusion-narrow`` come from
the same run. Every row also carries the model's empirical receptive field (the side of
the input region whose gradient reaches the centre output pixel of a 192-px input).

    python -m benchmarks.perf.networks          # full run, writes benchmarks/results/networks.*
    python -m benchmarks.perf.networks --quick  # 32 x 32, seconds; prints the table only
    python -m benchmarks.perf.networks --device cuda
    python -m benchmarks.perf.networks --scene  # quickstart scene: train time and test F1 of
                                                # fusion, fusion-narrow and unet, 3 seeds
    python -m benchmarks.perf.networks --scene --study studies/compare-synthetic.toml \
        --split blocked
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks._harness import Row, Run, add_common_flags, results_dir

DATASET = "synthetic-random"
BATCH, SOURCES, TIMES = 4, 8, 5
UNITS = {"pixels_per_s": "px/s", "seconds_per_step": "s", "peak_memory_mib": "MiB",
         "receptive_field_px": "px", "train_seconds": "CPU s", "train_seconds_sd": "CPU s"}
NARROW = "fusion-narrow"
"""The fusion network at the defaults before its DCNN branch got context."""
NARROW_PARAMS = {"dcnn.depth": 4, "dcnn.dilation": 2, "dcnn.max_dilation": 2, "dcnn.levels": 0}
RF_SIZE = 192
"""Input side on which receptive fields are measured (issue 19's figures use it too)."""


def build(model_name: str, n_sources: int, n_times: int, params: dict | None = None) -> Any:
    """A model of :data:`networks.NETWORK_NAMES`, or ``fusion-narrow`` (see module doc).

    Args:
        model_name: The name.
        n_sources: Input sources.
        n_times: Input dates.
        params: Config parameters on top of the defaults (and of ``fusion-narrow``'s).

    Returns:
        The freshly initialised model.
    """
    from networks import ModelConfig, build_model

    params = dict(params or {})
    if model_name == NARROW:
        return build_model("fusion", n_sources, n_times,
                           ModelConfig.from_params({**params, **NARROW_PARAMS}))  # fmt: skip
    return build_model(model_name, n_sources, n_times, ModelConfig.from_params(params))


def receptive_side(model_name: str) -> int:
    """Empirical receptive field (side, px) of a model at its defaults, S=8, T=5."""
    import torch

    from networks import receptive_field

    torch.manual_seed(0)
    return receptive_field(build(model_name, SOURCES, TIMES), SOURCES, TIMES, size=RF_SIZE).side


def _max_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Workload:
    """One model with a fixed random batch, ready to run forward+backward steps."""

    def __init__(self, model_name: str, size: int, device: str) -> None:
        import torch

        torch.manual_seed(0)
        self.torch = torch
        self.device = torch.device(device)
        self.name = model_name
        self.pixels = BATCH * size * size
        self.x = torch.randn(BATCH, SOURCES, TIMES, size, size, device=self.device)
        self.y = (torch.rand(BATCH, size, size, device=self.device) < 0.05).long()
        self.model = build(model_name, SOURCES, TIMES).to(self.device).train()
        self.params = sum(p.numel() for p in self.model.parameters())

    def step(self) -> float:
        """One forward+backward pass; returns its seconds.

        Wall-clock seconds on CUDA; on CPU the process's CPU seconds, which on a shared
        machine other processes' load inflates far less than wall time (with more than
        one thread they add up over the threads).
        """
        from networks import fusion_loss

        cuda = self.device.type == "cuda"
        clock = time.perf_counter if cuda else time.process_time
        start = clock()
        self.model.zero_grad(set_to_none=True)
        with self.torch.autocast(self.device.type, enabled=cuda):
            logits = self.model(self.x)
        fusion_loss(logits, self.y).backward()
        if cuda:
            self.torch.cuda.synchronize()
        return clock() - start


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
        sys.executable, "-m", "benchmarks.perf.networks", "--child", model_name,
        "--device", args.device, "--threads", str(args.threads), "--size", str(size),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"memory benchmark of {model_name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _narrow_row(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r["model"] == NARROW), None)


def _records(rows: list[dict], reference: float) -> list[dict[str, Any]]:
    """The result rows (as dicts) of the size / speed / memory run."""
    records = []
    narrow = _narrow_row(rows)
    for row in rows:
        metrics = {
            "params": row["params"],
            "pixels_per_s": row["pixels_per_s"],
            "pixels_per_s_ratio_to_segnet": row["pixels_per_s"] / reference,
            "seconds_per_step": row["seconds_per_step"],
            "peak_memory_mib": row["peak_memory_mib"],
        }
        if "receptive_field_px" in row:
            metrics["receptive_field_px"] = row["receptive_field_px"]
        if narrow is not None:
            metrics["params_ratio_to_fusion_narrow"] = row["params"] / narrow["params"]
            metrics["pixels_per_s_ratio_to_fusion_narrow"] = (
                row["pixels_per_s"] / narrow["pixels_per_s"]
            )
            if narrow["peak_memory_mib"] > 0:
                metrics["peak_memory_ratio_to_fusion_narrow"] = (
                    row["peak_memory_mib"] / narrow["peak_memory_mib"]
                )
        for metric, value in metrics.items():
            records.append(asdict(Row("networks", DATASET, row["model"], metric, value,
                                      UNITS.get(metric, ""))))  # fmt: skip
    return records


def _markdown(rows: list[dict], reference: float, setup: dict[str, Any]) -> str:
    memory = "peak CUDA memory" if setup["device"] == "cuda" else "peak RSS delta"
    lines = [
        f"Batch {BATCH} of (S={SOURCES}, T={TIMES}, {setup['size']}, {setup['size']}), "
        f"forward + backward, device {setup['device']} ({setup['device_name']}), "
        f"{setup['threads']} thread(s), median of {setup['reps']} round-robin repetitions "
        "after warm-up; "
        f"torch {setup['torch']}, {setup['date']}.",
        "",
        f"| model | parameters | pixels/s | × SegNet | s/step | {memory} (MiB) | "
        f"receptive field (px, of {RF_SIZE}) | params × narrow | pixels/s × narrow | "
        "memory × narrow |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    narrow = _narrow_row(rows)

    def ratio(row: dict, key: str) -> str:
        if narrow is None or not narrow[key]:
            return "-"
        return f"{row[key] / narrow[key]:.2f}"

    for row in rows:
        lines.append(
            f"| {row['model']} | {row['params']:,} | {row['pixels_per_s']:,.0f} | "
            f"{row['pixels_per_s'] / reference:.2f} | {row['seconds_per_step']:.3f} | "
            f"{row['peak_memory_mib']:,.0f} | {row.get('receptive_field_px', '-')} | "
            f"{ratio(row, 'params')} | {ratio(row, 'pixels_per_s')} | "
            f"{ratio(row, 'peak_memory_mib')} |"
        )
    if narrow is not None:
        lines += [
            "",
            f"`{NARROW}`: the fusion network at the defaults before issue 19 (DCNN branch of "
            "four full-resolution blocks dilated 1, 2, 1, 2); `fusion`: today's defaults "
            "(dilations 1, 2, 4, 8 on a grid downsampled once, skip decoder). Ratios "
            "(× narrow) are against it, measured in the same run.",
        ]
    return "\n".join(lines) + "\n"


SCENE_STUDY = Path(__file__).resolve().parents[2] / "studies" / "quickstart.toml"
SCENE_NARROW = {"dcnn.depth": 2, "dcnn.dilation": 2, "dcnn.max_dilation": 2, "dcnn.levels": 0}
"""The quickstart's DCNN before issue 19: two full-resolution blocks dilated 1, 2."""
SCENE_MODELS = ("fusion", NARROW, "unet")


def scene_params(study: Path) -> dict[str, Any]:
    """A study's untuned trial: its ``[model.fixed]`` and every stage's defaults."""
    from hpo.study import load_study

    spec = load_study(study)
    defaults = {p: ps.default for st in spec.stages for p, ps in st.params.items()}
    return {**spec.model.fixed, **defaults}


def scene(study: Path, seeds: list[int], split: str | None = None) -> list[dict[str, Any]]:
    """Train the untuned quickstart trial of each of :data:`SCENE_MODELS` on the study's
    split and score it on the test split (never read while tuning).

    ``fusion`` is the study's trial as shipped, ``fusion-narrow`` the same with the DCNN
    branch the quickstart had before issue 19 (:data:`SCENE_NARROW`), ``unet`` the U-Net
    at its defaults with the study's optimizer and head settings. The models of one seed
    run back to back, so the time ratios see the same background load. ``split``
    replaces the study's ``[data] split`` (``"blocked"``: blocks of 2 x 2 tiles, as
    compare-synthetic.toml's blocked comparison).

    Returns:
        One row per (seed, model): train CPU seconds, test F1 at 0.5 and at the
        validation threshold, test AUC.
    """
    import torch

    from hpo.study import ensure_scene, load_study, prepare_final_data
    from networks import ModelConfig, evaluate, train

    spec = load_study(study)
    ensure_scene(spec, say=lambda line: print(line, file=sys.stderr))
    section = dict(spec.data)
    if split is not None:
        section.update({"split": split, **({"block_size": 2} if split == "blocked" else {})})
    final = prepare_final_data(section, spec.base_dir, seed=spec.seed)
    base = scene_params(study)
    torch.set_num_threads(1)
    rows = []
    for seed in seeds:
        for name in SCENE_MODELS:
            params = dict(base)
            if name == NARROW:
                params = {k: v for k, v in params.items() if not k.startswith("dcnn.")}
                params.update(SCENE_NARROW)
            config = ModelConfig.from_params(params)
            # CPU time, not wall time: the machine is shared and training runs on one
            # thread, so CPU seconds are what a trial costs and what load does not inflate.
            start = time.process_time()
            history = train(config, final.train_set, final.val_set, seed=seed,
                            model="fusion" if name == NARROW else name, device="cpu")  # fmt: skip
            seconds = time.process_time() - start
            test = evaluate(
                history.model, final.test_set, head=config.head,
                batch_size=config.optim.batch_size, threshold=history.threshold,
            )  # fmt: skip
            rows.append({
                "model": name, "seed": seed, "train_seconds": seconds,
                "test_f1": test["f1"], "test_f1_at_val_threshold": test["f1_at_threshold"],
                "test_auc": test["auc"],
            })  # fmt: skip
            print(f"seed {seed} {name}: {seconds:.1f} s, test F1 {test['f1']:.3f} "
                  f"(val threshold {test['f1_at_threshold']:.3f}), AUC {test['auc']:.3f}",
                  file=sys.stderr)  # fmt: skip
    return rows


def _scene_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over seeds of every metric, and time ratios to narrow."""
    out: dict[str, dict[str, float]] = {}
    narrow = {r["seed"]: r["train_seconds"] for r in rows if r["model"] == NARROW}
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        summary: dict[str, float] = {}
        for key in ("train_seconds", "test_f1", "test_f1_at_val_threshold", "test_auc"):
            values = [float(r[key]) for r in mine if r[key] is not None]
            summary[key] = statistics.fmean(values)
            summary[key + "_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        if narrow:
            summary["train_seconds_ratio_to_fusion_narrow"] = statistics.fmean(
                r["train_seconds"] / narrow[r["seed"]] for r in mine
            )
        out[name] = summary
    return out


def _scene_markdown(summary: dict[str, dict[str, float]], setup: dict[str, Any]) -> str:
    lines = [
        f"The untuned trial of {setup['study']} ([model.fixed] and every stage's default), "
        f"trained on its train split ({setup.get('split', 'the study')} split) with seeds "
        f"{setup['seeds']}, scored on its test split; CPU, one thread; "
        f"torch {setup['torch']}, {setup['date']}. "
        f"`{NARROW}`: the same trial with the DCNN the quickstart had before issue 19 "
        "(two full-resolution blocks dilated 1, 2; the L4S and Kashmir studies had three); "
        "`unet`: the U-Net at its defaults with "
        "the trial's optimizer and head. Mean ± standard deviation over seeds; time ratios "
        "are per seed, against fusion-narrow.",
        "",
        "| model | test F1 (0.5) | test F1 (val threshold) | test AUC | train CPU s | "
        "train CPU × narrow |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in summary.items():
        lines.append(
            f"| {name} | {m['test_f1']:.3f} ± {m['test_f1_sd']:.3f} | "
            f"{m['test_f1_at_val_threshold']:.3f} ± {m['test_f1_at_val_threshold_sd']:.3f} | "
            f"{m['test_auc']:.3f} ± {m['test_auc_sd']:.3f} | {m['train_seconds']:.1f} | "
            f"{m.get('train_seconds_ratio_to_fusion_narrow', float('nan')):.2f} |"
        )
    return "\n".join(lines) + "\n"


def _scene_dataset(study: Path, split: str | None) -> str:
    """The data set's name in the records: the quickstart scene, or the study's data."""
    name = "quickstart-scene" if study.stem in ("quickstart", "compare-synthetic") else study.stem
    return name + (f"-{split}" if split else "")


def scene_rows(
    dataset: str, summary: dict[str, dict[str, float]], runs: list[dict[str, Any]]
) -> list[Row]:
    """The scene's rows: the summary over seeds, then every (seed, model) run."""
    n_seeds = len({r["seed"] for r in runs})
    rows = [
        Row("networks-scene", dataset, name, metric, value, UNITS.get(metric, ""),
            {"seeds": n_seeds})
        for name, metrics in summary.items()
        for metric, value in metrics.items()
    ]  # fmt: skip
    return rows + [
        Row("networks-scene", dataset, r["model"], metric, r[metric], UNITS.get(metric, ""),
            {"seed": r["seed"]})
        for r in runs
        for metric in ("train_seconds", "test_f1", "test_f1_at_val_threshold", "test_auc")
    ]  # fmt: skip


def _run_scene(args: argparse.Namespace) -> None:
    import torch

    seeds = list(range(args.seed, args.seed + args.seeds))
    rows = scene(args.study, seeds, args.split)
    summary = _scene_summary(rows)
    # The quickstart's own split keeps the plain name; other studies and splits say theirs.
    suffix = "".join(
        f"-{part}" for part in (args.study.stem, args.split) if part not in (None, "quickstart")
    )
    recorder = Run("networks_scene" + suffix, results_dir(args))
    setup = {
        "dataset": _scene_dataset(args.study, args.split), "study": args.study.name,
        "seeds": seeds,
        "split": args.split or "the study's",
        "device": "cpu", "threads": 1, "torch": str(torch.__version__),
        "date": recorder.machine["utc"][:10],
    }  # fmt: skip
    table = _scene_markdown(summary, setup)
    print(table)
    recorder.write(
        scene_rows(setup["dataset"], summary, rows), settings=setup, markdown=table,
        title=f"networks on {setup['dataset']}: the untuned trial, three models",
    )  # fmt: skip


def _device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.perf.networks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_flags(parser)  # --quick: 32 x 32 inputs, fewer reps; --seed: --scene's first
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per model")
    parser.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--scene", action="store_true",
        help="train fusion, fusion-narrow and unet on a study's scene (writes networks_scene.*)",
    )  # fmt: skip
    parser.add_argument("--study", type=Path, default=SCENE_STUDY, help="study of --scene")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds of --scene")
    parser.add_argument("--split", choices=["random", "blocked"], default=None,
                        help="--scene: replace the study's split")  # fmt: skip
    args = parser.parse_args(argv)
    size = args.size or (32 if args.quick else 128)
    reps = args.reps or (3 if args.quick else 5)

    if args.child:
        print(json.dumps(peak_memory(args.child, size, args.device, args.threads)))
        return
    if args.scene:
        _run_scene(args)
        return
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device visible to torch")

    from networks import NETWORK_NAMES

    recorder = Run("networks", results_dir(args))
    names = [NETWORK_NAMES[0], NARROW, *NETWORK_NAMES[1:]]
    rows = []
    # Every memory child first: on Linux a child's peak RSS starts from its parent's
    # resident size at fork, so a parent that has run a model would hide the children's.
    for name in names:
        rows.append({"model": name, **_memory_in_subprocess(name, args, size)})
        print(f"{name}: {rows[-1]['peak_memory_mib']:,.0f} MiB peak", file=sys.stderr)
    for row in rows:
        row["receptive_field_px"] = receptive_side(row["model"])
        print(f"{row['model']}: receptive field {row['receptive_field_px']} px",
              file=sys.stderr)  # fmt: skip
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
        "date": recorder.machine["utc"][:10],
    }  # fmt: skip
    table = _markdown(rows, reference, setup)
    print(table)
    recorder.write([Row(**r) for r in _records(rows, reference)], settings=setup,
                   markdown=table, title=f"networks benchmark ({DATASET})")


if __name__ == "__main__":
    main()
