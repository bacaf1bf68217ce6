"""Azure Table keys: valid for Azure, and two different values never share a key."""

import itertools
import re

import pytest

from transforms.io.table_keys import MAX_KEY_CHARS, escape, table_key

FORBIDDEN = "/\\#?" + "".join(map(chr, range(0x20))) + "".join(map(chr, range(0x7F, 0xA0)))
VALID_KEY = re.compile(r"[A-Za-z0-9._~!-]*")


def test_every_forbidden_character_is_escaped():
    value = f"set{FORBIDDEN}end"
    key = table_key(value)
    assert VALID_KEY.fullmatch(key)
    assert not set(key) & set(FORBIDDEN)
    assert key.startswith("set~2F~5C~23~3F~00~01")


def test_readable_characters_stay():
    assert escape("Holiday_2024-06.jpg") == "Holiday_2024-06.jpg"
    assert escape("é ~!") == "~C3~A9~20~7E~21"


@pytest.mark.parametrize(
    "first, second",
    [
        (("a/b",), ("a~2Fb",)),  # an escape sequence typed literally
        (("a", "b"), ("a!b",)),  # a separator typed literally
        (("a", "b"), ("a/b",)),
        (("a", ""), ("a",)),
        (("", "a"), ("a",)),
        (("ab", "c"), ("a", "bc")),
        (("x" * 600,), ("x" * 600 + "y",)),  # both shortened
        (("x" * 600,), ("x" * 446 + "~~",)),
    ],
)
def test_different_values_never_share_a_key(first, second):
    assert table_key(*first) != table_key(*second)


def test_keys_of_many_tricky_values_are_distinct():
    alphabet = ["a", "/", "~", "!", "#", "?", "\\", "~2F", "é", "\x01", ""]
    values = {"".join(p) for n in range(4) for p in itertools.product(alphabet, repeat=n)}
    keys = {table_key(value) for value in values}
    assert len(keys) == len(values)
    pairs = {(a, b) for a in alphabet for b in alphabet}
    assert len({table_key(a, b) for a, b in pairs}) == len(pairs)


def test_long_values_are_shortened_with_their_hash():
    long = "deep/" * 300
    key = table_key("v1", long)
    assert len(key) == MAX_KEY_CHARS
    assert VALID_KEY.fullmatch(key)
    assert key.startswith("v1!deep~2Fdeep")
    assert re.search(r"~~[0-9a-f]{64}$", key)
    assert table_key("v1", long) == key
    # A cut never leaves half an escape before the hash mark.
    for length in range(500, 520):
        shortened = table_key("é" * length)
        assert re.fullmatch(r"(~C3~A9)+~~[0-9a-f]{64}", shortened)
