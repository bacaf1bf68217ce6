"""The `imaginem` entry point: help, unknown commands, and what it keeps quiet."""

import logging

from beam_pipeline import cli
from beam_pipeline.log_noise import DropNoise


def test_help_goes_to_stdout_and_succeeds(capsys):
    assert cli.main(["--help"]) == 0
    out, err = capsys.readouterr()
    assert "usage: imaginem" in out and not err


def test_an_unknown_command_is_named(capsys):
    assert cli.main(["stpes"]) == 2
    _, err = capsys.readouterr()
    assert "unknown command 'stpes'" in err and "usage: imaginem" in err


def test_no_command_prints_the_usage_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: imaginem" in capsys.readouterr().err


def test_beams_import_noise_is_dropped_and_other_warnings_kept():
    noise = DropNoise()

    def record(message):
        return logging.LogRecord("apache_beam", logging.WARNING, "", 0, message, (), None)

    assert not noise.filter(record("Failed to import GCSFileSystem; loading of this ..."))
    assert not noise.filter(record("apitools not found, and bigquery client libraries ..."))
    assert not noise.filter(record("No semi_persistent_directory found:  User registered ..."))
    assert noise.filter(record("a worker failed"))
