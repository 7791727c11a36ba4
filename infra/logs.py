"""Logging setup: loguru to the console (INFO) and to one file per day under ``log_dir``."""

from __future__ import annotations

import sys
from pathlib import Path

from loguru import logger


def setup_logging(log_dir: Path, console_level: str = "INFO") -> None:
    """Console at ``console_level``; ``log_dir/tsx_YYYY-MM-DD.log`` at DEBUG, rotated at midnight, 14 kept."""
    logger.remove()
    logger.add(sys.stderr, level=console_level,
               format="<green>{time:HH:mm:ss}</green> <level>{level: <8}</level> {message}")
    log_dir.mkdir(parents=True, exist_ok=True)
    logger.add(log_dir / "tsx_{time:YYYY-MM-DD}.log", level="DEBUG", rotation="00:00", retention=14,
               enqueue=True)
