"""The exceptions ``networks`` raises on purpose for errors a user can cause.

It also holds :func:`explain`, the one reading of a pydantic ``ValidationError`` that the
typed configurations share (the network's config here, the study file in
``hpo.study.schema`` and the exported configuration in ``hpo.study.export_doc``): what is
wrong, at which key, with a hint and the nearest valid key for a misspelt one.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError


class NetworksError(Exception):
    """Base class of every error the ``networks`` package raises on purpose.

    ``message`` and ``hint`` are kept as attributes too, so a caller can name them in its
    own words (a study file's key, an export's).

    Args:
        message: What is wrong.
        hint: How to fix it, appended to the message when given.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} (hint: {hint})" if hint else message)


class ConfigError(NetworksError, ValueError):
    """A model configuration, parameter name or value is invalid.

    Args:
        message: What is wrong.
        key: The dotted parameter name at fault (``"optim.lr"``), when there is one.
        hint: How to fix it.
    """

    def __init__(self, message: str, *, key: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"[{key}] {message}" if key else message, hint=hint)
        self.key = key
        self.message = message  # without the key, which the text leads with


class CheckpointError(NetworksError):
    """A file is not a readable checkpoint, or a checkpoint cannot be written or rebuilt."""


class TrainingError(NetworksError):
    """Training cannot go on, e.g. the loss became NaN or a data set is unusable."""


Loc = tuple[str | int, ...]
"""Where a value sits in a configuration: table keys and array indices, outermost first."""


class Issue(NamedTuple):
    """The first problem of a ``ValidationError``, in the project's words.

    Attributes:
        loc: Where it is (a discriminated union's tag, which is no key of the file, left out).
        message: What is wrong.
        hint: How to fix it.
    """

    loc: Loc
    message: str
    hint: str | None


def invalid(message: str, hint: str | None = None, key: Loc = ()) -> PydanticCustomError:
    """The error a validator raises for a rule that pydantic's types cannot express.

    Args:
        message: What is wrong.
        hint: How to fix it.
        key: Where, below the validated value (e.g. ``("low",)`` from a parameter's
            validator, for its ``low`` key).

    Returns:
        The error to raise; :func:`explain` reads it back.
    """
    return PydanticCustomError("invalid", "{message}", {"message": message, "hint": hint or "",
                                                         "key": tuple(key)})


def explain(exc: ValidationError, root: Any, render: Callable[[Loc], str] | None = None) -> Issue:
    """The first problem of a validation error, with a hint and the nearest valid key.

    An unknown key is reported before anything else, as a misspelt key is the likeliest
    cause of the other errors too.

    Args:
        exc: The error pydantic raised.
        root: The type that was validated, walked to find the valid keys and choices.
        render: How a location is written in messages (default: dotted).

    Returns:
        Where the problem is, what it is and how to fix it.
    """
    render = render or _dotted
    errors = exc.errors(include_url=False)
    error = next((e for e in errors if e["type"] in _UNKNOWN), errors[0])
    loc, parent, field = _walk(root, error["loc"])
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    name = next((str(part) for part in reversed(loc) if isinstance(part, str)), "")
    if "hint" in ctx:  # raised by a validator of the project (see invalid)
        return Issue(loc + tuple(ctx.get("key", ())), error["msg"], ctx["hint"] or None)
    if kind in _UNKNOWN:
        message, hint = unknown_key(name, render(loc[:-1]), _fields(parent))
    elif kind in ("missing", "missing_argument", "missing_keyword_argument"):
        message, hint = f"missing required key {name!r}", f"add {name} = <{_expected(field)}>"
    elif kind in ("literal_error", "union_tag_invalid"):
        if kind == "union_tag_invalid":
            loc, value = (*loc, ctx["discriminator"].strip("'")), ctx["tag"]
        expected = ctx.get("expected") or ctx.get("expected_tags", "")
        # string choices come quoted ("'a' or 'b'"), numbers bare ("4 or 8")
        choices = re.findall(r"'([^']*)'", expected) or re.findall(r"[^\s,']+", expected.replace(
            " or ", ","))
        message, hint = not_one_of(value, choices)
    elif kind == "union_tag_not_found":
        loc = (*loc, ctx["discriminator"].strip("'"))
        message, hint = f"missing required key {loc[-1]!r}", f"add {loc[-1]}"
    elif kind in _BOUNDS:
        limit, rule = _BOUNDS[kind]
        message, hint = f"{name} = {value}", "use " + rule.format(ctx[limit])
    elif kind == "finite_number":
        message, hint = f"{name} = {value}", "use a finite number"
    elif kind == "too_short":
        message, hint = f"{name} is empty", "give at least one value"
    elif kind in _TYPES:
        expected = _TYPES[kind]
        message = f"expected {expected}, got {kind_of(value)} {value!r}"
        keys = _fields(_bare(field))
        hint = (
            f"write {name} as {expected}"
            if expected != "a table"
            else f"write it as [{render(loc)}] with keys {', '.join(keys)}"
            if keys
            else f"write {render(loc)} as a table"
        )
    else:
        message, hint = error["msg"], None
    return Issue(loc, message, hint)


def unknown_key(name: str, parent: str, allowed: Sequence[str]) -> tuple[str, str]:
    """Message and hint for a key that is not one of ``allowed``, naming the nearest.

    Args:
        name: The key as written.
        parent: The table it is in, as the file writes it (``""``: the top level).
        allowed: The valid keys.

    Returns:
        ``(message, hint)``.
    """
    near = difflib.get_close_matches(str(name), list(allowed), n=1, cutoff=0.6)
    where = f" in [{parent}]" if parent else ""
    hint = f"did you mean {near[0]!r}?" if near else f"valid keys: {', '.join(allowed)}"
    return f"unknown key {name!r}{where}", hint


def not_one_of(value: Any, choices: Sequence[str]) -> tuple[str, str]:
    """Message and hint for a value that is not one of ``choices``, naming the nearest."""
    near = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
    hint = f"did you mean {near[0]!r}?" if near else f"use one of {', '.join(choices)}"
    return f"{value!r} is not one of {', '.join(choices)}", hint


def kind_of(value: Any) -> str:
    """A value's kind as a TOML user reads it (``"a table"``, ``"an integer"``, ...)."""
    return {
        dict: "a table",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)


_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")
_BOUNDS = {
    "greater_than": ("gt", "a number > {}"),
    "greater_than_equal": ("ge", "{} or more"),
    "less_than": ("lt", "a number < {}"),
    "less_than_equal": ("le", "at most {}"),
}
_TYPES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "an array",
    "tuple_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "dataclass_type": "a table",
    "dataclass_exact_type": "a table",
    "model_attributes_type": "a table",
}
_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _dotted(loc: Loc) -> str:
    return ".".join(str(part) for part in loc)


def _expected(kind: Any) -> str:
    kind = _bare(kind)
    if _fields(kind) or get_origin(kind) in (dict, Mapping):
        return "a table"
    if get_origin(kind) in (list, tuple, Sequence):
        return "an array"
    return _NAMES.get(kind, "a value")


def _walk(root: Any, loc: Loc) -> tuple[Loc, Any, Any]:
    """Follow ``loc`` through the type ``root``: the key path, the parent's and the value's type.

    A discriminated union's tag in ``loc`` selects its member and is left out of the path,
    as is the member label pydantic adds for a plain union (``str`` of ``str | dict``).
    """
    kind, parent, path = root, None, []
    for part in loc:
        kind = _bare(kind)
        members = _tagged(kind)
        if isinstance(part, str) and part in members:
            kind = members[part]
            continue
        if isinstance(part, str) and get_origin(kind) in (Union, types.UnionType):
            continue
        parent, kind = kind, _child(kind, part)
        path.append(part)
    return tuple(path), parent, kind


def _bare(kind: Any) -> Any:
    """``kind`` without ``Annotated`` and ``None``.

    An ``Annotated`` marker with a ``model`` attribute (``hpo.study.fields.Checked``: a
    plain table validated as that model) stands for the model.
    """
    while True:
        if get_origin(kind) is Annotated:
            models = [m.model for m in kind.__metadata__ if _fields(getattr(m, "model", None))]
            kind = models[0] if models else get_args(kind)[0]
        elif get_origin(kind) in (Union, types.UnionType):
            args = [a for a in get_args(kind) if a is not type(None)]
            if len(args) != 1:
                return kind
            kind = args[0]
        else:
            return kind


def _tagged(kind: Any) -> dict[str, Any]:
    """The members of a union of dataclasses, by the value of their one-value ``Literal``."""
    if get_origin(kind) not in (Union, types.UnionType):
        return {}
    members = {}
    for member in get_args(kind):
        for hint in _hints(member).values():
            if get_origin(hint) is Literal and len(get_args(hint)) == 1:
                members[get_args(hint)[0]] = member
    return members


def _child(kind: Any, part: str | int) -> Any:
    if _fields(kind):
        return _hints(kind).get(part, Any)
    args = get_args(kind)
    if get_origin(kind) in (list, tuple, Sequence) and args:
        return args[0]
    if get_origin(kind) in (dict, Mapping) and args:
        return args[-1]
    return Any


def _fields(kind: Any) -> list[str]:
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return list(kind.model_fields)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return [f.name for f in dataclasses.fields(kind) if f.init]
    return []


@functools.cache
def _hints(kind: Any) -> dict[str, Any]:
    if not _fields(kind):
        return {}
    return get_type_hints(kind, include_extras=True)
