"""Warnings and progress through stdlib logging (logger "edgeood" and its children).

A safety monitor's warnings must not vanish: until the application routes them, the "edgeood"
logger has one default handler that writes them to stderr as "warning: ..." (it stands back
when a handler above already writes to stderr, so nothing is printed twice). The CLI replaces
it with setup_cli_logging(). Progress a caller asked for (progress=True) is a rich bar on a
terminal and, without one, one INFO line per stage ("export: fit ... done in 3.1 s"), so long
runs in CI logs are not silent. Library users route or silence all of it with logging, e.g.
logging.getLogger("edgeood").setLevel(logging.ERROR).
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
LOG = logging.getLogger("edgeood")


class _Lines(logging.Formatter):
    """'warning: msg' / 'error: msg' / 'debug: msg'; progress (INFO) lines as they are."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        if record.levelno < logging.INFO:
            return f"debug: {record.name}: {text}"
        return text


class _Stderr(logging.Handler):
    """Writes to the current sys.stderr (looked up at each record, so redirections count)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.setFormatter(_Lines())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


class _Default(_Stderr):
    """edgeood's last resort: prints unless a handler of an ancestor logger already writes this
    record to stderr (e.g. logging.basicConfig())."""

    def emit(self, record: logging.LogRecord) -> None:
        if not _printed_above(record):
            super().emit(record)


def _printed_above(record: logging.LogRecord) -> bool:
    logger: logging.Logger | None = LOG.parent if LOG.propagate else None
    while logger is not None:
        for h in logger.handlers:
            if isinstance(h, logging.StreamHandler) and record.levelno >= h.level and \
                    h.stream in (sys.stderr, sys.__stderr__):
                return True
        logger = logger.parent if logger.propagate else None
    return False


DEFAULT_HANDLER = _Default()
_CLI_HANDLER: _Stderr | None = None
if not any(isinstance(h, _Default) for h in LOG.handlers):
    LOG.addHandler(DEFAULT_HANDLER)
if LOG.level == logging.NOTSET:
    LOG.setLevel(logging.INFO)  # progress lines are INFO, and only sent when asked for


def setup_cli_logging(quiet: bool = False, debug: bool = False) -> None:
    """The CLI's handler in place of the default one: warnings ('warning: ...') always, progress
    lines unless quiet, debug records with debug. Idempotent."""
    global _CLI_HANDLER
    LOG.removeHandler(DEFAULT_HANDLER)
    if _CLI_HANDLER is not None:
        LOG.removeHandler(_CLI_HANDLER)
    _CLI_HANDLER = _Stderr()
    LOG.addHandler(_CLI_HANDLER)
    LOG.propagate = False  # the CLI's lines once, whatever configured the root logger
    LOG.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)


def _caller_logger() -> logging.Logger:
    """The logger of the module calling warn() ("edgeood.pipeline.export", ...)."""
    name = str(sys._getframe(2).f_globals.get("__name__", "edgeood"))
    return logging.getLogger(name if name.startswith("edgeood.") else "edgeood")


def warn(message: str) -> None:
    """A one-line warning, logged by the calling module's logger."""
    _caller_logger().warning(message)


def on_terminal() -> bool:
    return sys.stderr.isatty()


def track(items: Iterable[T], total: int | None, description: str, enabled: bool) -> Iterator[T]:
    """Yield items, showing a progress bar on stderr when enabled and stderr is a terminal
    (without one, the stage line of the stage this loop belongs to reports it)."""
    if not enabled or not on_terminal():
        start, count = time.perf_counter(), 0
        for item in items:
            count += 1
            yield item
        if enabled:
            LOG.getChild("progress").debug("%s: %d batches in %.1f s", description, count,
                                           time.perf_counter() - start)
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


@contextmanager
def stage(name: str, enabled: bool, logger: logging.Logger | None = None) -> Iterator[None]:
    """Time one stage; when enabled and stderr is not a terminal, log "NAME ... done in 3.1 s"
    once it completes (a stage that fails says nothing: its error does)."""
    start = time.perf_counter()
    yield
    if enabled and not on_terminal():
        (logger or LOG).info("%s ... done in %.1f s", name, time.perf_counter() - start)
