"""Checkpoints: model name, full config, sources, normalisation, versions and weights."""

from __future__ import annotations

import importlib.metadata
import os
import pickle
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from networks.config import ModelConfig
from networks.ensemble import SeedEnsemble
from networks.errors import CheckpointError, ConfigError
from networks.registry import MODEL_NAMES, build_model

FORMAT = "landslide-hpo/networks-checkpoint"
"""Marker stored in every checkpoint, so other files are told apart."""
FORMAT_VERSION = 2
"""Version of the layout below; bumped on incompatible changes. Version 2 added seed
ensembles (``members``); a single model is still written as version 1, which older
readers load."""
_MAX_MEMBERS = 64
"""Ensemble members a checkpoint may declare (a damaged count is refused, not built)."""


def package_versions() -> dict[str, str]:
    """Versions of torch, numpy and this package, as stored in checkpoints.

    Returns:
        ``{"torch": ..., "numpy": ..., "networks": ...}``.
    """
    try:
        own = importlib.metadata.version("landslide-hpo")
    except importlib.metadata.PackageNotFoundError:
        own = "unknown"
    # str(): torch.__version__ is a str subclass that weights_only loading refuses.
    return {"torch": str(torch.__version__), "numpy": str(np.__version__), "networks": own}


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        model_name: One of :data:`networks.MODEL_NAMES`.
        config: The full configuration the model was built and trained with.
        source_names: Input sources, in the order the model expects them.
        n_times: Input dates.
        norm_stats: Normalisation statistics as saved (numpy arrays come back as
            tensors), or ``None``.
        versions: Package versions at save time (see :func:`package_versions`).
        extra: Anything else the caller saved (plain data only), or ``None``.
        model: The rebuilt model with its weights, in eval mode (a
            :class:`networks.SeedEnsemble` for an ensemble).
        members: Models averaged by ``model`` (1: a single model).
    """

    model_name: str
    config: ModelConfig
    source_names: list[str]
    n_times: int
    norm_stats: dict[str, Any] | None
    versions: dict[str, str]
    extra: dict[str, Any] | None
    model: nn.Module = field(repr=False)
    members: int = 1

    @property
    def n_sources(self) -> int:
        """Input sources the model takes (``len(source_names)``)."""
        return len(self.source_names)


def _plain(value: Any, where: str) -> Any:
    """``value`` as content ``torch.load(weights_only=True)`` accepts, or a CheckpointError."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, torch.Tensor):
        return value
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            # Subclasses (enums, version strings) are refused by weights_only loading.
            return kind(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise CheckpointError(f"{where}: key {key!r} is neither a string nor an integer")
            out[key] = _plain(item, f"{where}.{key}")
        return out
    if isinstance(value, Sequence):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise CheckpointError(
        f"{where}: cannot store a {type(value).__name__}",
        hint="use plain data: dicts, lists, strings, numbers, numpy arrays or tensors",
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    model_name: str,
    config: ModelConfig,
    source_names: Sequence[str],
    norm_stats: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file in the same folder, then rename).

    Only plain data and tensors are written, so :func:`load_checkpoint` can read it with
    ``torch.load(weights_only=True)``, which never executes code from the file.

    Args:
        path: Where to write; missing parent folders are created.
        model: A model built by :func:`networks.build_model` (with ``n_sources`` and
            ``n_times``), or a :class:`networks.SeedEnsemble` of such models.
        model_name: The name it (every member) was built under.
        config: The configuration it was built with.
        source_names: One name per input source, in input order.
        norm_stats: Normalisation statistics of the inputs (plain data, numpy arrays or
            tensors).
        extra: Anything else to keep (plain data).

    Returns:
        The path written.

    Raises:
        CheckpointError: When the names do not match the model or something is not
            plain data.
        ConfigError: On an unknown model name.
    """
    if model_name not in MODEL_NAMES:
        raise ConfigError(
            f"unknown model {model_name!r}", key="model_name", hint=f"one of {MODEL_NAMES}"
        )
    n_sources = getattr(model, "n_sources", None)
    n_times = getattr(model, "n_times", None)
    if n_sources is None or n_times is None:
        raise CheckpointError(
            "the model has no n_sources/n_times", hint="build it with build_model"
        )
    if isinstance(source_names, str) or len(source_names) != n_sources:
        raise CheckpointError(
            f"{len(source_names)} source names for a model with {n_sources} sources",
            hint="pass one name per input source, in input order",
        )
    members = len(model.members) if isinstance(model, SeedEnsemble) else 1
    content = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if members > 1 else 1,
        "model_name": model_name,
        "members": members,
        "config": config.to_dict(),
        "source_names": [str(s) for s in source_names],
        "n_times": int(n_times),
        "norm_stats": _plain(norm_stats, "norm_stats"),
        "versions": package_versions(),
        "extra": _plain(extra, "extra"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return _save_atomically(Path(path), content)


def _save_atomically(path: Path, content: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp's 0600 would survive the rename: give the mode the umask gives new files
        # (a colleague or a GIS server reads the model too)
        mask = os.umask(0o022)
        os.umask(mask)
        os.fchmod(handle, 0o666 & ~mask)
        with os.fdopen(handle, "wb") as file:
            torch.save(content, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Read a checkpoint and rebuild its model.

    Args:
        path: A file written by :func:`save_checkpoint`.
        map_location: Device to load the weights (and put the model) on.

    Returns:
        The checkpoint, its model in eval mode.

    Raises:
        CheckpointError: When the file is missing, is not a checkpoint, has a newer format
            or its weights do not fit the stored configuration.
    """
    path = Path(path)
    content = _read(path, map_location)
    try:
        config = ModelConfig.from_dict(content["config"])
        source_names = [str(s) for s in content["source_names"]]
        n_times = int(content["n_times"])
        state = dict(content["state_dict"])
        name = content["model_name"]
        members = content.get("members", 1)
        if isinstance(members, bool) or not isinstance(members, int) or not (
            1 <= members <= _MAX_MEMBERS
        ):
            raise CheckpointError(f"{path}: damaged checkpoint: members {members!r}")
        _check_size(path, name, len(source_names), n_times, config, state, members)
        built = [build_model(name, len(source_names), n_times, config) for _ in range(members)]
        model = built[0] if members == 1 else SeedEnsemble(built)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: damaged or inconsistent checkpoint: its weights do not fit model "
                f"{name!r} with {len(source_names)} "
                f"sources, {n_times} dates and the stored config: {_mismatch(model, state)}",
                hint="the file belongs to another model or was damaged; pass the model.pt "
                "of the run",
            ) from exc
        versions = dict(content.get("versions") or {})
    except CheckpointError:
        raise
    except (KeyError, ValueError, TypeError, RuntimeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: damaged or inconsistent checkpoint: {exc}") from exc
    model.to(map_location).eval()
    return Checkpoint(
        model_name=content["model_name"],
        config=config,
        source_names=source_names,
        n_times=n_times,
        norm_stats=content.get("norm_stats"),
        versions=versions,
        extra=content.get("extra"),
        model=model,
        members=members,
    )


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """The checkpoint file's content, once it is a checkpoint of a format this reads."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refused(path, exc) from exc
    except Exception as exc:  # torch raises many types for foreign or corrupt files
        raise CheckpointError(
            f"{path}: not a checkpoint ({type(exc).__name__})",
            hint="pass a file written by save_checkpoint / hpo train",
        ) from exc
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a landslide-hpo checkpoint", hint="pass a file written by save_checkpoint"
        )
    version = content.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: damaged checkpoint: format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this "
            f"package reads ({FORMAT_VERSION})",
            hint="upgrade landslide-hpo",
        )
    return content


def _refused(path: Path, exc: pickle.UnpicklingError) -> CheckpointError:
    """The error for a file ``weights_only`` loading refused, naming the code it references."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found:
        return CheckpointError(
            f"{path}: refused to load: it references Python code ({found.group(1)}) that "
            "unpickling would run; checkpoints hold only tensors and plain data",
            hint="load checkpoints only from people you trust; re-create it with hpo train",
        )
    return CheckpointError(
        f"{path}: not a checkpoint (not a torch file of tensors and plain data)",
        hint="pass a file written by save_checkpoint / hpo train",
    )


def _check_size(
    path: Path,
    name: str,
    n_sources: int,
    n_times: int,
    config: ModelConfig,
    state: Mapping[str, Any],
    members: int = 1,
) -> None:
    """Refuse a checkpoint whose sizes describe a model far larger than the weights it holds.

    The model is built on the ``meta`` device (no memory) to count its weights, so a damaged
    or hostile ``n_times`` of a million is refused instead of allocated.
    """
    try:
        with torch.device("meta"):
            skeleton = build_model(name, n_sources, n_times, config)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - a model that cannot live on meta: load_state_dict checks
        return
    need = members * sum(v.numel() for v in skeleton.state_dict().values())
    have = sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor))
    if need > 2 * have + 2**20:
        raise CheckpointError(
            f"{path}: model {name!r} with {n_sources} sources and {n_times} dates would have "
            f"{need:,} weights, but the file holds {have:,}",
            hint="the file is damaged or belongs to another model; pass the model.pt of the run",
        )


def _mismatch(model: nn.Module, state: Mapping[str, Any]) -> str:
    """A one-line summary of how stored weights differ from a model's (torch lists them all)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    differ = [k for k in expected if k in stored and stored[k] != expected[k]]
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    problems = []
    if differ:
        k = differ[0]
        problems.append(
            f"{len(differ)} tensors differ in shape (first {k}: {list(stored[k])} stored, "
            f"{list(expected[k])} expected)"
        )
    if missing:
        problems.append(f"{len(missing)} missing (first {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
    return "; ".join(problems) or "load_state_dict refused them"
