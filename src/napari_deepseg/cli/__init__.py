"""Command line: ``napari-deepseg train | predict | demo | export | weights`` over the same engine the
widgets use."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import DeviceOutOfMemoryError
from . import demo, export, predict, train, weights

__all__ = ["main"]

COMMANDS = (train, predict, demo, export, weights)  # each adds its subparser and sets ``func``


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 on success, 1 for bad input (one line on stderr), 130 on Ctrl+C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    # OSError: disk full, permissions; FloatingPointError: training diverged (TrainingDivergedError);
    # ImportError: an optional extra (zarr, cluster, export, tensorboard) that is not installed.
    except (ValueError, TypeError, OSError, FloatingPointError, DeviceOutOfMemoryError, ImportError) as err:
        message = " ".join(str(err).split())  # one line, whatever the message held
        print(f"napari-deepseg {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-deepseg", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser
