"""Reading back what a run wrote: files with their modification times, table rows."""

import os

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
