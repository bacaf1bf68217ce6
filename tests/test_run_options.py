"""Everything that must fail before the pipeline starts, with a useful message."""

import os

import pytest
from apache_beam.options.pipeline_options import DirectOptions, SetupOptions, StandardOptions

from beam_pipeline.cli import main
from beam_pipeline.run import UsageError, plan_run, prepare_outputs, start
from beam_pipeline.summary import NO_METRICS, summarize, summary_record
from tests import image_factory
from tests.corpus_files import table_rows
from transforms.tables import schemas

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def _plan(corpus, *extra):
    return plan_run(["--corpus", corpus, "--version", "v1", *extra])


def _prepare(corpus, *extra):
    prepare_outputs(_plan(corpus, *extra))


def test_planning_a_run_writes_nothing(small_corpus):
    _plan(small_corpus, "--steps", "thumbnail,facecrop")
    assert table_rows(small_corpus, schemas.TRANSFORMS) == []
    _prepare(small_corpus, "--steps", "thumbnail,facecrop")
    assert len(table_rows(small_corpus, schemas.TRANSFORMS)) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "decode,thumbnial"], "unknown step.*thumbnial"),
        (["--steps", "pipelineoutput,thumbnail"], "must be the last step"),
        (["--stpes", "decode"], "unrecognised flag.*--stpes"),
        (["--thumbnail-max-side", "2"], "--thumbnail-max-side must be 8-4096"),
        (["--max-pixels", "0"], "--max-pixels must be between 1 and"),
        (["--max-pixels", "500000000"], "--max-pixels must be between 1 and"),
        (["stray", "--runner", "PortableRunner"], "unrecognised flag.*stray"),
        (["--direct_num_workers=x"], "invalid Beam flag value"),
        (["--step-module", "not_a_module"], "cannot import step module"),
        (["--runner", "NoSuchRunner"], "Unexpected pipeline runner: NoSuchRunner"),
        # The runner's module is imported before its flags are checked: the missing
        # package is named, not the flag called unknown.
        (
            ["--runner", DASK_RUNNER, "--dask_client_address", "tcp://x:8786"],
            f"--runner {DASK_RUNNER}: No module named 'dask'",
        ),
        (["--direct_num_workers", "-3"], "--direct_num_workers must be 0"),
        (["--api-rate", "5/s", "--api-quota-host", "999.1.1.1"], "--api-quota-host"),
        (["--api-config", "/no/such/apis.toml"], "cannot read --api-config"),
        (["--classification-top-k", "0"], "--classification-top-k must be 1-1000"),
        (
            ["--steps", "facedetection", "--face-grid", "2"],
            "--face-grid is for --facedetection-backend azure only",
        ),
        (["--steps", "facedetection", "--face-grid", "9"], "--face-grid must be 1-4"),
        (["--ocr-min-score", "1.5"], "--ocr-min-score must be 0-1"),
        (["--face-min-score", "1"], "--face-min-score must be between 0 and 1"),
        (["--face-min-size", "0"], "--face-min-size must be 0.005-1"),
        (["--match-threshold", "3"], "--match-threshold must be between 0 and 2"),
        (["--match-candidates", "0"], "--match-candidates must be 1-100"),
        (["--facecrop-version", "a/b"], "facecrop version"),
        (["--steps", "faceprint,facecrop"], "'faceprint' is listed before 'facecrop'"),
    ],
)
def test_bad_run_flags_fail_before_the_pipeline(small_corpus, extra, message):
    with pytest.raises(UsageError, match=message):
        _plan(small_corpus, *extra)


def test_missing_version_says_to_ingest(tmp_path):
    with pytest.raises(UsageError, match="not found.*imaginem ingest"):
        _plan(str(tmp_path))


def test_invalid_version_is_refused(small_corpus):
    with pytest.raises(UsageError, match="invalid corpus version"):
        plan_run(["--corpus", small_corpus, "--version", "v1/../x"])


def test_reusing_a_thumbnail_version_with_new_settings_is_refused(small_corpus):
    _prepare(small_corpus)
    with pytest.raises(UsageError, match="choose a new --thumbnail-version|Choose a new"):
        _prepare(small_corpus, "--thumbnail-max-side", "128")
    plan = _plan(small_corpus, "--thumbnail-max-side", "128", "--thumbnail-version", "2")
    assert plan.step_names[:2] == ["decode", "thumbnail"]


def test_face_chips_are_numbered_by_the_detector_settings(small_corpus):
    _prepare(small_corpus, "--steps", "facecrop")
    with pytest.raises(UsageError, match="Choose a new --facecrop-version"):
        _prepare(small_corpus, "--steps", "facecrop", "--face-min-score", "0.8")
    _prepare(
        small_corpus, "--steps", "facecrop", "--face-min-score", "0.8", "--facecrop-version", "3"
    )


def test_a_gallery_without_people_is_refused(small_corpus, tmp_path):
    (tmp_path / "gallery" / "someone").mkdir(parents=True)
    (tmp_path / "gallery" / "loose.jpg").write_bytes(b"not in a person folder")
    with pytest.raises(UsageError, match="has no images: it needs one sub-folder per person"):
        _plan(small_corpus, "--gallery", str(tmp_path / "gallery"))
    with pytest.raises(UsageError, match="has no images"):
        _plan(small_corpus, "--gallery", str(tmp_path / "missing"))


def test_default_runner_is_local_on_every_core(small_corpus):
    options = _plan(small_corpus).pipeline_options
    assert options.view_as(StandardOptions).runner is None
    direct = options.view_as(DirectOptions)
    assert direct.direct_running_mode == "multi_processing"
    assert direct.direct_num_workers == os.cpu_count()


def test_explicit_beam_flags_are_kept(small_corpus):
    options = _plan(
        small_corpus, "--direct_num_workers", "1", "--direct_running_mode", "in_memory"
    ).pipeline_options
    direct = options.view_as(DirectOptions)
    assert (direct.direct_num_workers, direct.direct_running_mode) == (1, "in_memory")
    runner = _plan(small_corpus, "--runner", "PortableRunner").pipeline_options
    assert runner.view_as(StandardOptions).runner == "PortableRunner"


def test_workers_import_the_project_before_any_step(small_corpus):
    """On every runner: `transforms` keeps torch out of Beam's RunInference module only
    if a worker imports it first, as a plugin."""
    for extra in ((), ("--runner", "PortableRunner")):
        options = _plan(small_corpus, *extra).pipeline_options
        assert options.view_as(SetupOptions).beam_plugins == ["transforms"]


def test_cli_run_reports_usage_errors_with_exit_code_2(small_corpus, capsys):
    code = main(["run", "--corpus", small_corpus, "--version", "v1", "--steps", "nope"])
    assert code == 2
    assert "imaginem run: error: unknown step(s): nope" in capsys.readouterr().err


def test_run_help_lists_step_options(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--thumbnail-version" in out and "--max-pixels" in out


def test_an_api_config_value_of_the_wrong_type_is_named_not_shown(small_corpus, tmp_path):
    config = tmp_path / "apis.toml"
    config.write_text("[azure-vision]\nkey = 12345\n")
    with pytest.raises(UsageError, match="key must be a quoted string") as caught:
        _plan(small_corpus, "--api-config", str(config))
    assert "12345" not in str(caught.value)


@pytest.mark.parametrize(
    ("corpus", "message"),
    [("", "the corpus root is empty"), ("gs://bucket/corpus", "no filesystem for gs://")],
)
def test_a_corpus_root_that_cannot_work_is_refused(corpus, message):
    with pytest.raises(UsageError, match=message):
        plan_run(["--corpus", corpus, "--version", "v1"])


def test_direct_runner_runs_here_and_never_tries_prism(small_corpus, monkeypatch):
    from apache_beam.runners.portability import prism_runner

    tried = []

    def no_prism(*args, **kwargs):
        tried.append(args)  # Beam's DirectRunner would fall back after any exception
        raise RuntimeError("no Prism here")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", no_prism)
    plan = _plan(small_corpus, "--runner", "DirectRunner", "--steps", "thumbnail")
    assert plan.pipeline_options.view_as(DirectOptions).direct_running_mode == "multi_processing"
    prepare_outputs(plan)
    assert start(plan).state == "DONE"
    assert tried == []
    assert len(table_rows(small_corpus, schemas.IMAGES)) == len(image_factory.GOOD_FILES)


def test_a_runner_without_metrics_gets_a_summary_all_the_same():
    class NoMetrics:
        state = "DONE"

        def metrics(self):
            raise NotImplementedError

    text = summarize(NoMetrics(), "ROOT", "v1", ["thumbnail"])
    assert text.splitlines() == ["Run of ROOT version v1: DONE", f"  {NO_METRICS}"]
    assert summary_record(NoMetrics(), ["thumbnail"]) == {"status": "DONE", "metrics": NO_METRICS}
