"""Imaginem application: the `imaginem` CLI, run options and the Beam graph."""
