"""Where the ``hpo`` command writes: its two consoles and the libraries' log records."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import optuna
from rich.console import Console
from rich.logging import RichHandler


def consoles() -> tuple[Console, Console]:
    """The consoles of standard output and standard error."""
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for console in (out, err):
        if not console.is_terminal:  # logs and pipes: do not cut tables at 80 columns
            console.width = max(console.width, 160)
    return out, err


def setup_logging(console: Console, debug: bool) -> Callable[[], None]:
    """The engine's warnings (failed trials, ...) through ``console``; INFO with --debug.

    Returns:
        A function that puts the loggers back as they were (``main`` runs in-process in
        tests and notebooks too).
    """
    saved_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.DEBUG if debug else optuna.logging.WARNING)
    notice = _NoGreenletNotice()
    optuna_handlers = list(logging.getLogger("optuna").handlers)
    for optuna_handler in optuna_handlers:
        optuna_handler.addFilter(notice)
    handler = RichHandler(
        console=console, show_path=False, show_time=debug, rich_tracebacks=debug, markup=False
    )
    saved = {}
    for name in ("hpo", "networks", "data"):
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers, logger.level, logger.propagate)
        logger.handlers = [handler]
        logger.setLevel(logging.INFO if debug and name == "hpo" else logging.WARNING)
        logger.propagate = False
    catcher = warnings.catch_warnings()
    catcher.__enter__()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    def restore() -> None:
        catcher.__exit__(None, None, None)
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        for optuna_handler in optuna_handlers:
            optuna_handler.removeFilter(notice)
        optuna.logging.set_verbosity(saved_verbosity)

    return restore


class _NoGreenletNotice(logging.Filter):
    """Drop Optuna's GP sampler notice about the optional ``greenlet`` package."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102 - logging's hook
        return "'greenlet' package is unavailable" not in record.getMessage()
