"""Azure Table entities: what goes in a row, and how rows are grouped into transactions."""

import numpy as np
import pytest

from transforms.tables import azure_tables
from transforms.tables.azure_tables import (
    MAX_BATCH_ENTITIES,
    MAX_ENTITY_BYTES,
    MAX_PROPERTIES,
    OMITTED,
    build_entity,
    entity_bytes,
    request_bytes,
    transactions,
)


def test_results_are_json_and_nulls_are_left_out():
    entity = build_entity(
        "p", "r", {"width": 3, "format": None}, {"ocr": {"text": "hé"}, "faceprint": None}
    )
    assert entity == {"PartitionKey": "p", "RowKey": "r", "width": 3, "ocr": '{"text":"hé"}'}


def test_large_results_are_omitted_and_named():
    huge = {"text": "x" * 40_000}  # 80 KB in UTF-16: over the 64 KiB string limit
    entity = build_entity("p", "r", {"width": 3}, {"ocr": huge, "thumbnail": {"uri": "u"}})
    assert "ocr" not in entity
    assert entity["thumbnail"] == '{"uri":"u"}'
    assert entity[OMITTED] == "ocr"


def test_an_entity_stays_under_one_mebibyte_and_252_properties():
    results = {f"step{i}": {"text": "y" * 30_000} for i in range(40)}  # ~60 KB each
    entity = build_entity("p", "r", {"width": 3}, results)
    assert entity_bytes(entity) <= MAX_ENTITY_BYTES
    kept = [name for name in results if name in entity]
    assert 0 < len(kept) < len(results)
    assert sorted(entity[OMITTED].split(",")) == sorted(set(results) - set(kept))

    many = {f"s{i}": i for i in range(400)}
    entity = build_entity("p", "r", {}, many)
    assert len(entity) - 2 <= MAX_PROPERTIES
    assert OMITTED in entity


def test_int64_only_when_needed():
    entity = build_entity("p", "r", {"small": 5, "big": 5 * 2**32, "numpy": np.int32(7)})
    assert entity["small"] == 5 and entity["numpy"] == 7
    assert entity["big"].value == 5 * 2**32 and entity["big"].edm_type.name == "INT64"


def test_face_embedding_is_stored_as_float32_bytes():
    row = {
        "face_id": "f",
        "corpus_version": "v1",
        "set_path": "a/b",
        "source_path": "a/b/photo.jpg",
        "face_index": 2,
        "box": {"left": 1, "top": 2, "right": 3, "bottom": 4},
        "embedding": [0.5] * 128,
        "person": None,
    }
    entity = azure_tables.face_entity(row, "azfs://acct/photos/2024")
    assert entity["PartitionKey"] == "photos~2F2024!v1!a~2Fb"
    assert entity["RowKey"] == "photo.jpg!0002"
    assert np.frombuffer(entity["embedding"], "<f4").tolist() == [0.5] * 128
    assert entity["box"] == '{"left":1,"top":2,"right":3,"bottom":4}'
    assert "person" not in entity
    # A run with only some face steps: merged into the stored entity, it carries just
    # their columns, a missing value as "" so that no earlier value survives.
    matched_only = azure_tables.face_entity(row, "azfs://acct/photos", ("person", "distance"))
    assert {k for k in matched_only if k not in ("PartitionKey", "RowKey")} == {
        "corpus_version", "source_path", "face_index", "file_name", "person", "distance",
    }  # fmt: skip
    assert matched_only["person"] == matched_only["distance"] == ""


def test_transformed_set_never_shares_a_key_with_its_original():
    original = azure_tables.image_set_entity(
        {
            "set_path": "red/robin",
            "corpus_version": "v1",
            "tags": ["red", "robin"],
            "blob_prefix": "root/original/red/robin/v1/",
            "image_count": 2,
            "bytes": 10,
        },
        "root",
    )
    transformed = azure_tables.transformed_set_entity(
        "root", "red/robin", "v1", "thumbnail", "1", 2
    )
    assert original["PartitionKey"] == transformed["PartitionKey"]
    assert original["RowKey"] != transformed["RowKey"]
    assert transformed["blob_prefix"] == "root/transform/thumbnail/1/red/robin/v1/"


def test_corpora_sharing_an_account_never_share_a_partition():
    row = {"corpus_version": "v1", "set_path": "birds", "file_name": "a.jpg"}
    row |= {name: None for name in azure_tables._IMAGE_PROPERTIES if name not in row}
    keys = {
        azure_tables.image_entity(row, [], root)["PartitionKey"]
        for root in ("azfs://acct/corpus-a", "azfs://acct/corpus-b", "azfs://acct/corpus-a/sub")
    }
    assert len(keys) == 3


def test_step_names_must_be_property_names():
    azure_tables.check_property_names(["ocr", "face_blur", "_x1"])
    for bad in ("face-blur", "1st", "Timestamp", "omitted_results"):
        with pytest.raises(ValueError, match="--no-azure-tables"):
            azure_tables.check_property_names([bad])


def test_batches_are_sized_by_their_json_body():
    # CJK text is 2 bytes per character stored but 6 in the JSON body (\uXXXX).
    cjk = [{"PartitionKey": "a", "RowKey": str(i), "ocr": "文" * 7000} for i in range(100)]
    assert sum(entity_bytes(e) for e in cjk) < 1_500_000
    chunks = list(transactions(cjk))
    assert len(chunks) > 1
    assert all(sum(request_bytes(e) for e in chunk) <= 3_500_000 for chunk in chunks)
    assert request_bytes(cjk[0]) > 6 * 7000


def test_transactions_hold_one_partition_at_most_100_entities_and_4_mib():
    entities = [{"PartitionKey": "a", "RowKey": str(i)} for i in range(250)]
    entities += [{"PartitionKey": "b", "RowKey": "0"}]
    chunks = list(transactions(entities))
    assert [len(chunk) for chunk in chunks] == [100, 100, 50, 1]
    assert all(len({e["PartitionKey"] for e in chunk}) == 1 for chunk in chunks)
    assert max(len(chunk) for chunk in chunks) <= MAX_BATCH_ENTITIES

    big = [{"PartitionKey": "a", "RowKey": str(i), "x": "z" * 400_000} for i in range(12)]
    chunks = list(transactions(big))
    assert all(sum(request_bytes(e) for e in chunk) <= 4 * 1024 * 1024 for chunk in chunks)
    assert sum(len(chunk) for chunk in chunks) == 12
