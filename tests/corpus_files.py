"""Running `imaginem` and reading back what it wrote: files with their modification
times, table rows."""

import json
import os
import subprocess
import sys

from transforms.tables import delta


def files_under(folder):
    """path -> mtime of every file below `folder`: equal before and after = nothing rewritten."""
    return {
        os.path.join(dirpath, name): os.stat(os.path.join(dirpath, name)).st_mtime_ns
        for dirpath, _, names in os.walk(folder)
        for name in names
    }


def table_rows(root, table, corpus_version=None):
    rows = delta.read(delta.location(root, table)).to_pylist()
    if corpus_version:
        rows = [row for row in rows if row["corpus_version"] == corpus_version]
    return rows


def tables_without_root(root, tables):
    """Every row of `tables` as sorted JSON, with the corpus root taken out of paths:
    equal for two roots = the same results."""
    return {
        table: sorted(
            json.dumps(row, sort_keys=True, default=str).replace(root, "ROOT")
            for row in table_rows(root, table)
        )
        for table in tables
    }


def imaginem(*argv, env=None, timeout=900):
    """`imaginem ARGV` in a process of its own; its completed process, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "beam_pipeline.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
