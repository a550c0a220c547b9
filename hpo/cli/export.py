"""``hpo export``: the best configuration of a search with its provenance (YAML or JSON)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from hpo import study as st
from hpo.cli import _common as common
from hpo.engine.errors import SearchNotFoundError
from hpo.engine.progress import format_value
from hpo.engine.storage import mask_url
from hpo.study.schema import StudySpec


def add_parser(subparsers: Any) -> None:
    """Add ``hpo export`` and its arguments."""
    p = common.add_command(
        subparsers,
        "export",
        "write the best configuration with provenance (YAML or JSON)",
        "Write the merged best configuration of a search (every stage's tuned values, "
        "the full network config, the data section) with its provenance.",
    )
    p.add_argument("study", metavar="STUDY.toml", help="the study file")
    p.add_argument("-o", "--output", metavar="FILE", default="best.yaml",
                   help="output file, .yaml or .json (default: best.yaml)")
    common.add_storage(p)
    common.add_data_path(p)
    common.add_allow_outside(p)


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run ``hpo export``; returns the exit status."""
    # Not at the top: every command imports this module, and the export loads torch.
    from hpo.study.export import export_best

    spec = st.load_study(
        args.study, storage=args.storage, check_paths=False, data_path=args.data_path,
        allow_outside=args.allow_outside,
    )
    if not st.storage_exists(spec.storage):
        raise SearchNotFoundError(spec.name, mask_url(spec.storage))
    search = st.make_search(spec)
    result = search.status()
    if not any(s.state != "pending" for s in result.stages):
        raise SearchNotFoundError(spec.name, mask_url(spec.storage))
    doc = export_best(result, args.output, spec=spec, data_hash=_data_hash(spec))
    finished = [s for s in result.stages if s.state == "finished"]
    if not result.finished:
        err.print(
            f"hpo: warning: the search is not finished ({len(finished)}/"
            f"{len(result.stages)} stages); unfinished stages are at their defaults"
        )
    out.print(
        f"wrote {args.output}: best {spec.metric} {format_value(doc['best_value'])} "
        f"({len(finished)}/{len(result.stages)} stages tuned)",
        soft_wrap=True,
    )
    out.print(
        f"train it: [bold]{common.command('hpo', 'train', args.output)}[/bold] (final training, "
        "test-split metrics)",
        soft_wrap=True,
    )
    return common.EXIT_OK


def _data_hash(spec: StudySpec) -> str | None:
    """The prepared cube's hash when its data are at hand (the cube is cached by tune)."""
    scene = st.scene_file(spec)
    if scene is not None and not scene.is_file():
        return None
    try:
        # Not at the top: every command imports this module, and `data` loads GDAL.
        import data

        return str(data.prepare(st.data_section(spec), spec.base_dir).hash)
    except Exception:  # noqa: BLE001 - provenance only: never fail an export over it
        return None
