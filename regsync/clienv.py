"""The sync commands' settings read from the environment (and the options that override
them): where the content index lives, and how the run shows its progress.

A bad value is a ``ConfigError``, reported as a usage error like the config's own.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from regsync.blobindex import BlobIndex


def open_index(args: argparse.Namespace) -> BlobIndex | None:
    """The persistent content index for commands that copy (a hint: None works too)."""
    from regsync.blobindex import BlobIndex

    return BlobIndex.open(state_dir(args))


def state_dir(args: argparse.Namespace) -> Path:
    """--state-dir, else $REGSYNC_STATE_DIR, else the XDG default."""
    from regsync.blobindex import default_state_dir

    given = getattr(args, "state_dir", None)
    return Path(given) if given else default_state_dir(os.environ)


def progress(args: argparse.Namespace) -> contextlib.AbstractContextManager[Any]:
    """A live display for `once` on a terminal; elsewhere a progress log line per rule at most
    every 30 s (``REGSYNC_PROGRESS_INTERVAL``), at the default verbosity too. A bad interval
    is a ``ConfigError`` (checked wherever the run is, as the other environment settings)."""
    if args.command not in ("once", "copy"):
        return contextlib.nullcontext()
    from regsync.backends.registry.retry import env_number
    from regsync.progress import LOG_INTERVAL, ProgressLog

    interval = env_number(os.environ, "REGSYNC_PROGRESS_INTERVAL", LOG_INTERVAL)
    if args.quiet:
        return contextlib.nullcontext()
    if args.log_format != "text" or not sys.stderr.isatty():
        logger = logging.getLogger("regsync.progress")
        logger.setLevel(logging.INFO)  # shown without -v: it is the run's heartbeat
        return ProgressLog(interval, logger=logger)
    from regsync.progress import ProgressDisplay  # rich loads only for a terminal

    return ProgressDisplay()
