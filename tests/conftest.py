import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing.test_pipeline import TestPipeline

from tests import image_factory
from transforms.corpus.ingest import ingest_drop
from transforms.corpus.sample import build_sample_corpus, build_sample_gallery


def make_test_pipeline() -> TestPipeline:
    """In-process FnApiRunner: Beam's default DirectRunner would try to fetch Prism."""
    return TestPipeline(runner=fn_runner.FnApiRunner(), options=PipelineOptions([]))


@pytest.fixture
def small_corpus(tmp_path):
    """A corpus with one version `v1` holding the good and bad generated files."""
    drop = tmp_path / "drop"
    image_factory.write_files(str(drop), image_factory.GOOD_FILES)
    image_factory.write_files(
        str(drop), {path: data for path, (data, _) in image_factory.BAD_FILES.items()}
    )
    root = str(tmp_path / "corpus")
    ingest_drop(str(drop), root, "v1")
    return root


@pytest.fixture(scope="session")
def azurite():
    """One in-memory Azurite on loopback for the session; tests use their own containers."""
    from tests.azurite import Azurite

    emulator = Azurite().start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def sample_with_gallery(tmp_path_factory):
    """The sample drop and a gallery of its two people, (drop folder, gallery folder)."""
    folder = tmp_path_factory.mktemp("sample-with-gallery")
    drop, gallery = str(folder / "drop"), str(folder / "gallery")
    build_sample_corpus(drop)
    build_sample_gallery(drop, gallery)
    return drop, gallery


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory, sample_with_gallery):
    """The sample drop and gallery, ingested and run through every step once."""
    from beam_pipeline.cli import main
    from beam_pipeline.run import run
    from tests.corpus_files import table_rows
    from transforms.tables import schemas

    drop, gallery = sample_with_gallery
    root = str(tmp_path_factory.mktemp("vision") / "corpus")
    assert main(["ingest", drop, "--corpus", root, "--version", "v1"]) == 0
    result = run(["--corpus", root, "--version", "v1", "--gallery", gallery])
    assert result.state == "DONE"
    images = {row["source_path"]: row for row in table_rows(root, schemas.IMAGES)}
    return {"drop": drop, "gallery": gallery, "root": root, "images": images, "result": result}
