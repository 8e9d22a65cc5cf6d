"""``napari-deepseg weights list | download ENCODER``: which ImageNet weights are in the torch hub
cache, and fetching torchvision's file for an encoder (the only download the package ever makes)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..models._download import BASE_URL_ENV
from ..models._pretrained import IMAGENET_WEIGHTS


def add_parser(sub: Any) -> None:
    p = sub.add_parser("weights", help="list or download the encoders' ImageNet weights")
    actions = p.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="show which encoders have ImageNet weights in the cache")
    listing.set_defaults(func=run_list)
    download = actions.add_parser(
        "download",
        help="fetch torchvision's ImageNet weights of encoders into the torch hub cache (hash checked)",
    )
    download.add_argument("encoder", nargs="+", choices=tuple(IMAGENET_WEIGHTS), metavar="ENCODER")
    download.add_argument(
        "--url",
        help=f"fetch from this address instead (one encoder); {BASE_URL_ENV}=BASE replaces torchvision's "
        "base address for every file",
    )
    download.set_defaults(func=run_download)


def run_list(args: argparse.Namespace) -> int:
    from ..models import pretrained_weights_status

    for encoder in IMAGENET_WEIGHTS:
        status = pretrained_weights_status(encoder)
        state = (
            f"cached   {status.found}" if status.found else f"missing  (expected at {status.expected_path})"
        )
        print(f"{encoder:<10} {state}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..models import download_pretrained, pretrained_weights_status

    if args.url and len(args.encoder) > 1:
        raise ValueError("--url names one file: give one encoder with it")
    for encoder in dict.fromkeys(args.encoder):
        found = pretrained_weights_status(encoder).found
        if found is not None:
            print(f"{encoder}: already in the cache at {found}")
            continue
        with tqdm(desc=encoder, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr) as bar:

            def show(done: int, total: int | None, bar: Any = bar) -> None:
                bar.total = total
                bar.update(done - bar.n)

            path = download_pretrained(encoder, show, url=args.url)
        print(f"{encoder}: saved {path}")
    return 0
