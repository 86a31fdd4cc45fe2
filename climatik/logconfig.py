"""structlog set-up, done once by the command line: JSON lines when stdout is not a terminal."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure_logging(level: str = "info", *, json_lines: bool | None = None, stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's logging to `stream` at `level`."""
    stream = stream or sys.stdout
    if json_lines is None:
        json_lines = not stream.isatty()
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), structlog.processors.format_exc_info,
                    renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # Libraries (urllib3, kubernetes) log through the standard library: keep them quieter and on the same stream.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=stream, force=True,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
