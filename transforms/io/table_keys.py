"""Azure Table PartitionKey/RowKey values built from paths and versions.

Azure refuses `/ \\ # ?` and control characters in keys and caps each key at 1 KiB
(512 UTF-16 characters). A key here is one or more parts, each escaped so that only
`A-Z a-z 0-9 - _ .` stay as they are and every other UTF-8 byte becomes `~XX` (upper
hex), joined by `!`, which escaping never emits. Different parts therefore always give
different keys. A key that would pass the cap keeps a readable prefix and ends in `~~`
plus the SHA-256 of the full escaped key: escaping never emits `~~` either, so a
shortened key can only equal another shortened key of the same value. The original
values are kept in the entity's properties.
"""

from __future__ import annotations

import hashlib
import string

MAX_KEY_CHARS = 512
_KEPT = frozenset(string.ascii_letters + string.digits + "-_.")
_SEPARATOR = "!"
_HASH_MARK = "~~"
_HASH_CHARS = 64


def escape(value: str) -> str:
    """`value` with every character outside `A-Z a-z 0-9 - _ .` as `~XX` UTF-8 bytes."""
    out = []
    for char in value:
        if char in _KEPT:
            out.append(char)
        else:
            out.extend(f"~{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def table_key(*parts: str) -> str:
    """A valid, collision-free Azure Table key for the tuple `parts`."""
    key = _SEPARATOR.join(escape(part) for part in parts)
    if len(key) <= MAX_KEY_CHARS:
        return key
    digest = hashlib.sha256(key.encode("ascii")).hexdigest()
    prefix = key[: MAX_KEY_CHARS - len(_HASH_MARK) - _HASH_CHARS]
    # Do not end inside an escape: the prefix stays readable.
    cut = prefix.rfind("~", len(prefix) - 2)
    if cut != -1:
        prefix = prefix[:cut]
    return f"{prefix}{_HASH_MARK}{digest}"
