"""Pure functions that build corpus paths.

Layout under one corpus root (any Beam filesystem path)::

    <root>/original/<set path>/<corpus version>/<file>
    <root>/transform/<name>/<transform version>/<set path>/<corpus version>/<file>
    <root>/metadata/<table>/...

The root ImageSet (files directly in a drop's top folder) has the empty set path and
adds no path component. Two different (set path, version, file) triples can never map
to the same path: a set path of depth d always yields d + 2 components below the
prefix, and equal depths compare component by component.
"""

from __future__ import annotations

import re
import unicodedata

ORIGINAL_DIR = "original"
TRANSFORM_DIR = "transform"
METADATA_DIR = "metadata"

# Versions name folders and table partitions, so they are kept to a short, portable
# alphabet. No "." either: ingested file names always have an extension, so a version
# folder can never be mistaken for (or block) a file of the root set.
_VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# Blob stores treat a backslash as a separator, so it is refused like "/".
_FORBIDDEN_IN_COMPONENT = ("/", "\\")
_MAX_COMPONENT_BYTES = 255
# What outputs add to a file's name at most (`<file>.face-NNNN.jpg`): a longer name
# would be ingested and then fail at `thumbnail` or `facecrop`.
DERIVED_SUFFIX_BYTES = 16
MAX_FILE_NAME_BYTES = _MAX_COMPONENT_BYTES - DERIVED_SUFFIX_BYTES


class UnsafePathError(ValueError):
    """A path component that could escape the corpus or be misread by a store."""


def _is_control(char: str) -> bool:
    # Format characters (Cf) such as ZWNJ are legitimate in Persian or emoji names.
    return unicodedata.category(char) in ("Cc", "Zl", "Zp")


def check_component(component: str) -> str:
    """Returns `component` if it is safe as one path segment, else raises.

    Raises:
        UnsafePathError: empty, `.`/`..`, a separator, a control character, or
            longer than 255 UTF-8 bytes.
    """
    if not component:
        raise UnsafePathError("empty path component")
    if component in (".", ".."):
        raise UnsafePathError(f"relative path component {component!r}")
    for char in component:
        if char in _FORBIDDEN_IN_COMPONENT:
            raise UnsafePathError(f"separator {char!r} in path component {component!r}")
        if _is_control(char):
            raise UnsafePathError(
                f"control character U+{ord(char):04X} in path component {component!r}"
            )
    try:
        encoded = component.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UnsafePathError(f"path component {component!r} is not valid UTF-8") from error
    if len(encoded) > _MAX_COMPONENT_BYTES:
        raise UnsafePathError(f"path component longer than {_MAX_COMPONENT_BYTES} bytes")
    return component


def check_file_name(file_name: str) -> str:
    """Returns `file_name` if it is safe and leaves room for the names derived from it.

    Raises:
        UnsafePathError: an unsafe component, or longer than `MAX_FILE_NAME_BYTES`.
    """
    check_component(file_name)
    if len(file_name.encode("utf-8")) > MAX_FILE_NAME_BYTES:
        raise UnsafePathError(
            f"file name longer than {MAX_FILE_NAME_BYTES} bytes (UTF-8): its thumbnail and "
            f"face chips add up to {DERIVED_SUFFIX_BYTES} more, and a name may have 255"
        )
    return file_name


def check_version(version: str, what: str = "corpus version") -> str:
    """Returns `version` if it is a valid corpus or transform version, else raises."""
    if not isinstance(version, str) or not _VERSION_PATTERN.fullmatch(version):
        raise UnsafePathError(
            f"invalid {what} {version!r}: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit (e.g. v1, 2024-06-drop)"
        )
    return version


def split_relative(path: str) -> tuple[str, ...]:
    """Splits a relative POSIX path into checked components.

    Raises:
        UnsafePathError: for absolute paths or any unsafe component.
    """
    if path.startswith("/"):
        raise UnsafePathError(f"absolute path {path!r}")
    if path == "":
        return ()
    return tuple(check_component(part) for part in path.split("/"))


def tags_of(set_path: str) -> list[str]:
    """An ImageSet's tags are the components of its set path (`red/robin` -> both)."""
    return list(split_relative(set_path))


def join(*parts: str) -> str:
    """Joins a root URI and relative parts with '/', on any Beam filesystem."""
    head, *rest = parts
    pieces = [head.rstrip("/")] + [part.strip("/") for part in rest if part]
    return "/".join(pieces)


def original_uri(root: str, set_path: str, corpus_version: str, file_name: str) -> str:
    """Where an ingested original lives."""
    return join(
        root,
        ORIGINAL_DIR,
        *split_relative(set_path),
        check_version(corpus_version),
        check_component(file_name),
    )


def set_prefix(root: str, set_path: str, corpus_version: str) -> str:
    """The folder (ending in "/") holding one ImageSet's originals for one version.

    Its files are the objects directly under it; deeper objects belong to other sets
    (the root set's prefix `original/v1/` also holds set `v1`'s version folders).
    """
    folder = join(root, ORIGINAL_DIR, *split_relative(set_path), check_version(corpus_version))
    return folder + "/"


def transform_uri(
    root: str,
    transform_name: str,
    transform_version: str,
    set_path: str,
    corpus_version: str,
    file_name: str,
) -> str:
    """Where a transformed image lives; each transform version has its own tree."""
    return join(
        root,
        TRANSFORM_DIR,
        check_component(transform_name),
        check_version(transform_version, "transform version"),
        *split_relative(set_path),
        check_version(corpus_version),
        check_component(file_name),
    )


def transform_set_prefix(
    root: str, transform_name: str, transform_version: str, set_path: str, corpus_version: str
) -> str:
    """The folder (ending in "/") holding one ImageSet's outputs of one transform version."""
    return transform_uri(root, transform_name, transform_version, set_path, corpus_version, "-")[
        :-1
    ]


def metadata_dir(root: str, table: str) -> str:
    """The folder of one metadata table (a Parquet dataset)."""
    return join(root, METADATA_DIR, check_component(table))


def partition_dir(root: str, table: str, **partition: str) -> str:
    """A hive-style partition folder, e.g. `.../images/corpus_version=v1`."""
    parts = [f"{key}={check_component(value)}" for key, value in partition.items()]
    return join(metadata_dir(root, table), *parts)
