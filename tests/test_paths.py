import pytest

from transforms import paths
from transforms.paths import UnsafePathError


def test_original_uri_nests_set_path_then_version():
    uri = paths.original_uri("/corpus", "red/angry/robin", "v1", "a.jpg")
    assert uri == "/corpus/original/red/angry/robin/v1/a.jpg"


def test_root_set_adds_no_component():
    assert paths.original_uri("azfs://acct/box/", "", "v2", "a.jpg") == (
        "azfs://acct/box/original/v2/a.jpg"
    )


def test_transform_uri_keeps_each_transform_version_apart():
    first = paths.transform_uri("/c", "thumbnail", "1", "cats", "v1", "a.jpg")
    second = paths.transform_uri("/c", "thumbnail", "2", "cats", "v1", "a.jpg")
    assert first == "/c/transform/thumbnail/1/cats/v1/a.jpg"
    assert first != second


def test_tags_are_set_path_components():
    assert paths.tags_of("red/angry/robin") == ["red", "angry", "robin"]
    assert paths.tags_of("") == []


@pytest.mark.parametrize(
    "set_path",
    ["..", "a/../b", "/etc", "a//b", "./a", "a/b\\c", "a/\nb", "tab\there", "a/\x7f", "line\u2028"],
)
def test_unsafe_set_paths_are_refused(set_path):
    with pytest.raises(UnsafePathError):
        paths.original_uri("/c", set_path, "v1", "a.jpg")


@pytest.mark.parametrize("file_name", ["", ".", "..", "a/b.jpg", "a\\b.jpg", "a\x00.jpg"])
def test_unsafe_file_names_are_refused(file_name):
    with pytest.raises(UnsafePathError):
        paths.original_uri("/c", "s", "v1", file_name)


def test_non_ascii_and_format_characters_are_allowed():
    # ZWNJ (a format character) is part of ordinary Persian names.
    name = "می\u200cخواهم é 日本.jpg"
    assert paths.original_uri("/c", "ünï", "v1", name).endswith(f"/ünï/v1/{name}")


def test_undecodable_names_are_refused():
    with pytest.raises(UnsafePathError, match="UTF-8"):
        paths.check_component("bad\udcff.jpg")


def test_overlong_component_is_refused():
    with pytest.raises(UnsafePathError, match="255"):
        paths.check_component("é" * 200)


@pytest.mark.parametrize("version", ["v1", "2024-06-01", "drop_7b"])
def test_good_versions(version):
    assert paths.check_version(version) == version


@pytest.mark.parametrize("version", ["", "../v1", "v 1", "-v1", "v/1", "v1.2", "a.jpg", "x" * 65])
def test_bad_versions_say_what_is_allowed(version):
    with pytest.raises(UnsafePathError, match="letters, digits"):
        paths.check_version(version)


def test_distinct_inputs_never_share_a_path():
    triples = [
        ("", "v1", "a.jpg"),
        ("v1", "v1", "a.jpg"),
        ("a", "v1", "v1"),
        ("a/v1", "v1", "a.jpg"),
        ("a", "v1", "a.jpg"),
    ]
    uris = {paths.original_uri("/c", *triple) for triple in triples}
    assert len(uris) == len(triples)


def test_partition_dir_is_hive_style():
    assert paths.partition_dir("/c", "images", corpus_version="v1") == (
        "/c/metadata/images/corpus_version=v1"
    )
