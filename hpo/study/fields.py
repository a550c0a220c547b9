"""What the study file's and the export's models share: vocabularies, field types, errors.

Every rule of the schema that pydantic's types do not express raises :func:`fail`, which
:func:`networks.errors.explain` reads back (message, hint, key); :func:`toml_key` writes the
key at fault as the study file writes it. :class:`Checked` validates a table against its
model but keeps it as written (``[data]``, ``[compare]``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, StrictFloat, StrictInt, ValidationInfo
from pydantic_core import PydanticCustomError, core_schema

METRICS = ("f1", "miou", "auc", "f1_best", "miou_best")
MODELS = ("fusion", "segnet", "deeplabv3", "pspnet", "unet", "hgb")
RUNNERS = ("local", "ray")

STUDY_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)
"""The config of every study-file model: unknown keys and non-finite numbers are refused."""
Loc = tuple[str | int, ...]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
# TOML integers are 64-bit; Python's parser reads longer ones, which overflow numpy and torch.
_INT_RANGE = (-(2**63), 2**63 - 1)


def fail(message: str, hint: str, key: Loc = ()) -> PydanticCustomError:
    """The error a validator raises for a rule of the study file.

    Args:
        message: What is wrong.
        hint: How to fix it.
        key: Where, below the validated value (``("low",)`` from a parameter's validator).

    Returns:
        The error, read back by :func:`networks.errors.explain` (``hint`` and ``key`` in
        its context, as ``networks.errors.invalid`` gives them).
    """
    return PydanticCustomError("invalid", "{message}", {"message": message, "hint": hint,
                                                         "key": tuple(key)})


class Checked:
    """``Annotated`` marker: validate a value as ``model`` but keep it as written.

    The ``[data]`` and ``[compare]`` tables are checked against their models when a study
    file or an export is validated (with a validation context), while the spec keeps the
    table itself: its fingerprint and the code that reads it see the file's own keys and
    values. A spec rebuilt from another (``dataclasses.replace``: a comparison's variant
    and split) keeps its tables unchecked, as the data package checks what it reads.

    Args:
        model: The pydantic model or dataclass the value must satisfy.
    """

    def __init__(self, model: type) -> None:
        self.model = model

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        def keep(value: Any, validate: Any, info: ValidationInfo) -> Any:
            if info.context is not None:
                validate(value)
            return dict(value) if isinstance(value, Mapping) else value

        return core_schema.with_info_wrap_validator_function(
            keep, handler.generate_schema(self.model)
        )


def fits_64_bits(value: int) -> int:
    """The integer, checked to fit in 64 bits as TOML's integers do.

    Raises:
        PydanticCustomError: It does not.
    """
    if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        raise fail(
            f"{value} does not fit in 64 bits",
            f"use an integer from {_INT_RANGE[0]} to {_INT_RANGE[1]}",
        )
    return value


def named(what: str) -> AfterValidator:
    """A validator of a name (a study's, a stage's): a letter, then letters, digits, ``_``, ``-``.

    Args:
        what: What the name names, as the error says it.
    """

    def check(value: str) -> str:
        if not _NAME.match(value):
            raise fail(
                f"invalid {what} name {value!r}",
                "start with a letter; use letters, digits, '_' or '-'",
            )
        return value

    return AfterValidator(check)


Int = Annotated[StrictInt, AfterValidator(fits_64_bits)]
Float = StrictFloat  # strict: no strings; integers become floats (`low = 0` is 0.0)


def toml_key(loc: Loc, raw: Any) -> str:
    """A location as a study file writes its key: ``stages.optim.params."optim.lr".low``.

    A stage is named by its name when it has a valid one (else ``stages[1]``); an array
    index is ``[i]``; a key that is not a bare TOML key is quoted.

    Args:
        loc: The location (pydantic's, or a rule's ``key``).
        raw: The document it points into, where stage names are looked up.
    """
    text, node = "", raw
    for part in loc:
        stage = node[part] if text == "stages" and isinstance(node, list) \
            and isinstance(part, int) and part < len(node) else None
        name = stage.get("name") if isinstance(stage, Mapping) else None
        if isinstance(name, str) and name:
            text += f".{name}"
        elif isinstance(part, int):
            text += f"[{part}]"
        else:
            text = f"{text}.{_part(part)}" if text else _part(part)
        node = _get(node, part)
    return text


def _get(node: Any, part: str | int) -> Any:
    if isinstance(node, Mapping):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    return None


def _part(name: str) -> str:
    """A key part as TOML writes it: dotted parameter names are quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9_\-]+", name) else f'"{name}"'


__all__ = [
    "METRICS",
    "MODELS",
    "RUNNERS",
    "STUDY_CONFIG",
    "Checked",
    "Float",
    "Int",
    "Loc",
    "fail",
    "fits_64_bits",
    "named",
    "toml_key",
]
