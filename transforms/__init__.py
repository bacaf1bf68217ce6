"""Imaginem library: records, pure path functions, decode, steps and sinks.

Nothing here parses a command line; `beam_pipeline` is the application.
"""
