import os

import pyarrow as pa
import pyarrow.dataset as ds

from transforms import tables

SCHEMA = pa.schema([("key", pa.string()), ("value", pa.int64())])


def test_replace_partition_leaves_only_the_new_rows(tmp_path):
    partition = str(tmp_path / "t" / "corpus_version=v1")
    tables.write_shard(partition, 0, 3, [{"key": "old", "value": 1}], SCHEMA)
    tables.write_shard(partition, 2, 3, [{"key": "old2", "value": 2}], SCHEMA)
    tables.replace_partition(partition, [{"key": "new", "value": 3}], SCHEMA)
    assert tables.read_partition(partition) == [{"key": "new", "value": 3}]
    assert os.listdir(partition) == ["part-00000-of-00001.parquet"]


def test_an_empty_partition_is_still_a_readable_table(tmp_path):
    partition = str(tmp_path / "t" / "corpus_version=v1")
    tables.replace_partition(partition, [], SCHEMA)
    assert ds.dataset(str(tmp_path / "t")).to_table().num_rows == 0


def test_large_shards_are_written_in_row_groups(tmp_path):
    partition = str(tmp_path / "t")
    rows = ({"key": str(i), "value": i} for i in range(25_000))
    uri = tables.write_shard(partition, 0, 1, rows, SCHEMA)
    import pyarrow.parquet as pq

    metadata = pq.read_metadata(uri)
    assert (metadata.num_rows, metadata.num_row_groups) == (25_000, 3)


def test_no_temporary_files_are_left_behind(tmp_path):
    partition = str(tmp_path / "t")
    tables.replace_partition(partition, [{"key": "a", "value": 1}], SCHEMA)
    assert [name for name in os.listdir(partition) if name.startswith(".")] == []
