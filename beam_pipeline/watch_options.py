"""The flags only `imaginem watch` has: where new files are found, and how often."""

from __future__ import annotations

import argparse

from beam_pipeline.arg_types import positive
from transforms.corpus.arrivals import DEFAULT_VISIBILITY_SECONDS

DEFAULT_POLL_SECONDS = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--poll-seconds",
        type=positive(float),
        default=DEFAULT_POLL_SECONDS,
        help="how often the version's folders are listed, or the queue read (default %(default)s)",
    )
    parser.add_argument(
        "--queue",
        metavar="NAME",
        help="read blob-created events (Event Grid) from this Storage Queue of the "
        "corpus's account instead of listing the version's folders, which does not "
        "scale to large containers; a queue serves one watch",
    )
    parser.add_argument(
        "--queue-visibility-seconds",
        type=positive(int),
        default=DEFAULT_VISIBILITY_SECONDS,
        help="how long a received message stays hidden while its image is processed; "
        "it is deleted when it shows again with the image's rows committed "
        "(default %(default)s)",
    )


def parse(argv: list[str]) -> argparse.Namespace:
    """The watch's own flags in `argv` (the others are left to `imaginem run`'s parser)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return parser.parse_known_args(argv)[0]
