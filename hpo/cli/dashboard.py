"""``hpo dashboard``: a search in optuna-dashboard."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from hpo import study as st
from hpo.cli import _common as common
from hpo.engine.errors import SearchNotFoundError
from hpo.engine.storage import make_artifact_store, make_storage, mask_url

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(subparsers: Any) -> None:
    """Add ``hpo dashboard`` and its arguments."""
    p = common.add_command(
        subparsers,
        "dashboard",
        "open a search in optuna-dashboard",
        "Start optuna-dashboard on a search's storage (every stage is a study there) "
        "with its artifact folder. Ctrl-C stops it.",
    )
    p.add_argument("target", metavar="STUDY.toml|URL", help="a study file or a storage URL")
    common.add_storage(p)
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 lets "
        "anyone who can reach it see and edit the studies)",
    )
    p.add_argument(
        "--artifact-dir", metavar="DIR", help="artifact folder (default: the study's `artifacts`)"
    )
    common.add_allow_outside(p)


def run(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run ``hpo dashboard`` until Ctrl-C; returns the exit status."""
    spec, url, name = common.resolve_target(args)
    if not st.storage_exists(url):
        raise SearchNotFoundError(name or "<any>", mask_url(url))
    artifacts = args.artifact_dir or (str(spec.artifacts) if spec is not None else None)
    try:
        # Not at the top: it (and scikit-learn) takes most of a second, for this command only.
        import optuna_dashboard
    except ImportError as exc:
        raise common.UsageError(
            "optuna-dashboard is not installed (pip install optuna-dashboard)"
        ) from exc
    storage = make_storage(url)
    store = make_artifact_store(artifacts) if artifacts else None
    _announce(args, url, name, artifacts, out, err)
    try:
        optuna_dashboard.run_server(storage, host=args.host, port=args.port, artifact_store=store)
    except KeyboardInterrupt:
        out.print("dashboard stopped")
    except OSError as exc:
        raise OSError(
            f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc} "
            f"(hint: pick another --port)"
        ) from exc
    return common.EXIT_OK


def _announce(
    args: argparse.Namespace,
    url: str,
    name: str | None,
    artifacts: str | None,
    out: Console,
    err: Console,
) -> None:
    """Where the dashboard listens, who can reach it, and the equivalent command."""
    equivalent = [
        "optuna-dashboard",
        _dashboard_storage_arg(url),
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    if artifacts:
        equivalent += ["--artifact-dir", artifacts]
    host = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address in a URL
    local = args.host in _LOOPBACK
    out.print(
        f"optuna-dashboard on [bold]http://{host}:{args.port}/[/bold] for "
        f"{mask_url(url)}" + (f" (search {name})" if name else "") + "; Ctrl-C stops it",
        soft_wrap=True,
    )
    out.print(
        f"listening on {args.host} "
        + ("only (this machine; --host 0.0.0.0 exposes it)" if local else "(set by --host)"),
        soft_wrap=True,
    )
    out.print(f"same as: {common.command(*equivalent)}", soft_wrap=True)
    if not local:
        err.print(
            f"hpo: warning: listening on {args.host}: anyone who can reach this machine can "
            "see and edit these studies (optuna-dashboard has no login)"
        )


def _dashboard_storage_arg(url: str) -> str:
    """The storage as optuna-dashboard's command line takes it (journal -> file path)."""
    if url.startswith("journal://"):
        return url[len("journal://") :]
    return url
