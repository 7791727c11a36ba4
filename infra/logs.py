"""Logging setup: loguru to the console (INFO) and to one file per day under ``log_dir``, secrets redacted.

Every line is redacted by :data:`infra.redact.REDACTOR` (API key, session tokens, Slack webhook URL
and path, registered values; see :mod:`infra.redact`): a loguru patcher redacts the message for
every sink (also sinks added later), and each sink set up here is wrapped in
:class:`infra.redact.RedactingSink`, which redacts the fully formatted text, the exception traceback
included. loguru's ``diagnose`` (values of local variables in tracebacks: that is how the API key
once reached a log) and ``backtrace`` (frames above the catching one) are off unless ``debug``
(``supervisor.py --debug``); even then the output is redacted.
"""

from __future__ import annotations

import sys
from pathlib import Path

from loguru import logger
from loguru._file_sink import FileSink

from infra.redact import REDACTOR, Redactor, install_filter

CONSOLE_FORMAT = "<green>{time:HH:mm:ss}</green> <level>{level: <8}</level> {message}"


def setup_logging(log_dir: Path, console_level: str = "INFO", *, debug: bool = False,
                  redactor: Redactor | None = None) -> None:
    """Console (stderr) at ``console_level``; ``log_dir/tsx_YYYY-MM-DD.log`` at DEBUG, rotated at
    midnight, 14 kept. Both redacted by ``redactor`` (default: the process-wide
    :data:`infra.redact.REDACTOR`), which also becomes loguru's patcher and the filter of the
    ``httpx`` stdlib logger. ``debug``: loguru ``diagnose`` and ``backtrace`` on (variable values
    in tracebacks; for debugging only)."""
    red = redactor or REDACTOR
    red.load_env()
    logger.remove()
    logger.configure(patcher=red.patch)
    logger.add(red.sink(sys.stderr), level=console_level, format=CONSOLE_FORMAT, diagnose=debug, backtrace=debug)
    log_dir.mkdir(parents=True, exist_ok=True)
    # what logger.add(path) would build (rotation, retention), built here to wrap it in the redaction
    file_sink = FileSink(log_dir / "tsx_{time:YYYY-MM-DD}.log", rotation="00:00", retention=14)
    logger.add(red.sink(file_sink), level="DEBUG", enqueue=True, colorize=False, diagnose=debug, backtrace=debug)
    install_filter("httpx", red)
