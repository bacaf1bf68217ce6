import os

import pytest

from beam_pipeline.cli import main
from tests import image_factory
from tests.corpus_files import table_rows
from transforms.corpus.ingest import ingest_drop, read_manifest, scan_drop
from transforms.io import storage
from transforms.tables import delta, schemas

FILES = {
    "red/angry/robin/a.jpg": image_factory.jpeg_bytes(),
    "red/angry/robin/B.PNG": image_factory.png_bytes(),
    "top.jpeg": image_factory.jpeg_bytes(32, 32),
}


@pytest.fixture
def drop(tmp_path):
    folder = tmp_path / "drop"
    image_factory.write_files(str(folder), FILES)
    image_factory.write_files(str(folder), {"red/readme.txt": b"x", "red/.hidden.jpg": b"x"})
    return str(folder)


def test_scan_finds_images_case_insensitively_and_ignores_the_rest(drop):
    scan = scan_drop(drop)
    assert sorted(f.source_path for f in scan.files) == sorted(FILES)
    assert scan.ignored == 2 and not scan.rejected


def test_symlink_outside_is_rejected_and_inside_followed(tmp_path, drop):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(image_factory.jpeg_bytes())
    os.symlink(outside / "secret.jpg", os.path.join(drop, "leak.jpg"))
    os.symlink(outside, os.path.join(drop, "leakdir"))
    os.symlink(os.path.join(drop, "top.jpeg"), os.path.join(drop, "alias.jpg"))
    os.symlink(drop, os.path.join(drop, "red", "loop"))
    scan = scan_drop(drop)
    assert {r.source_path: r.reason for r in scan.rejected} == {
        "leak.jpg": "symlink points outside the drop",
        "leakdir": "symlink points outside the drop",
    }
    found = sorted(f.source_path for f in scan.files)
    # The loop back to the drop is walked once, not forever and not twice.
    assert found == sorted([*FILES, "alias.jpg"])


def test_a_symlinked_folder_never_takes_a_real_folders_set_path(drop):
    os.symlink(os.path.join(drop, "red"), os.path.join(drop, "a-link"))
    scan = scan_drop(drop)
    assert "red/angry/robin/a.jpg" in {f.source_path for f in scan.files}
    assert not any(f.source_path.startswith("a-link") for f in scan.files)


def test_a_link_in_a_folder_walked_first_does_not_take_a_later_real_folder(tmp_path):
    drop = tmp_path / "drop"
    image_factory.write_files(str(drop), {"zzz/x.png": image_factory.png_bytes()})
    (drop / "aaa").mkdir()
    os.symlink("../zzz", drop / "aaa" / "link")
    scan = scan_drop(str(drop))
    assert [(f.source_path, f.set_path) for f in scan.files] == [("zzz/x.png", "zzz")]


def test_a_corpus_inside_the_drop_is_refused(tmp_path, drop):
    with pytest.raises(ValueError, match="inside the drop folder"):
        ingest_drop(drop, os.path.join(drop, "corpus"), "v1")
    assert not os.path.exists(os.path.join(drop, "corpus"))


def test_images_in_a_refused_folder_are_each_rejected(drop):
    image_factory.write_files(drop, {"bad\x07name/inner/x.jpg": b"1", "bad\x07name/y.png": b"2"})
    scan = scan_drop(drop)
    rejected = {r.source_path: r.reason for r in scan.rejected}
    assert set(rejected) == {"bad\\x07name/inner/x.jpg", "bad\\x07name/y.png"}
    assert all("control character U+0007" in reason for reason in rejected.values())


def test_an_unreadable_folder_is_reported_not_fatal(drop, monkeypatch):
    real_scandir = os.scandir

    def scandir(path):
        if path.endswith("angry"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    scan = scan_drop(drop)
    assert [(r.source_path, r.reason) for r in scan.rejected] == [
        ("red/angry", "cannot list folder: Permission denied")
    ]
    assert [f.source_path for f in scan.files] == ["top.jpeg"]


def test_ingest_copies_into_the_layout_and_records_hashes(tmp_path, drop):
    root = str(tmp_path / "corpus")
    report = ingest_drop(drop, root, "v1")
    assert (report.copied, report.skipped, report.failed) == (3, 0, [])
    entries = {entry.source_path: entry for entry in read_manifest(root, "v1")}
    robin = entries["red/angry/robin/a.jpg"]
    assert robin.uri == f"{root}/original/red/angry/robin/v1/a.jpg"
    assert robin.tags == ["red", "angry", "robin"]
    assert open(robin.uri, "rb").read() == FILES["red/angry/robin/a.jpg"]
    assert robin.bytes == len(FILES["red/angry/robin/a.jpg"])
    assert entries["top.jpeg"].uri == f"{root}/original/v1/top.jpeg"
    sets = table_rows(root, schemas.IMAGE_SETS, "v1")
    assert {(row["set_path"], row["image_count"]) for row in sets} == {
        ("red/angry/robin", 2),
        ("", 1),
    }


def test_rerun_skips_everything_and_keeps_one_row_per_file(tmp_path, drop):
    root = str(tmp_path / "corpus")
    ingest_drop(drop, root, "v1")
    mtime = os.stat(f"{root}/original/v1/top.jpeg").st_mtime_ns
    report = ingest_drop(drop, root, "v1", max_parallel=2)
    assert (report.copied, report.skipped) == (0, 3)
    assert len(read_manifest(root, "v1")) == 3
    assert os.stat(f"{root}/original/v1/top.jpeg").st_mtime_ns == mtime


def test_interrupted_ingest_resumes_by_hash(tmp_path, drop):
    root = str(tmp_path / "corpus")
    ingest_drop(drop, root, "v1")
    # As if the run died after copying files but before writing its manifest.
    delta.delete(delta.location(root, schemas.MANIFEST), "corpus_version = 'v1'")
    os.remove(f"{root}/original/v1/top.jpeg")
    report = ingest_drop(drop, root, "v1")
    assert (report.copied, report.skipped) == (1, 2)


def test_changed_file_is_never_overwritten_in_the_same_version(tmp_path, drop):
    root = str(tmp_path / "corpus")
    ingest_drop(drop, root, "v1")
    with open(os.path.join(drop, "top.jpeg"), "wb") as handle:
        handle.write(image_factory.png_bytes())
    report = ingest_drop(drop, root, "v1")
    assert [failure.source_path for failure in report.failed] == ["top.jpeg"]
    assert "new version" in report.failed[0].reason
    assert open(f"{root}/original/v1/top.jpeg", "rb").read() == FILES["top.jpeg"]
    assert len(read_manifest(root, "v1")) == 3


def test_concurrent_writers_never_overwrite_each_other(tmp_path, drop):
    root = str(tmp_path / "corpus")
    ingest_drop(drop, root, "v1")
    target = f"{root}/original/v1/top.jpeg"
    with pytest.raises(FileExistsError):
        storage.write_bytes_atomically(target, b"other bytes", overwrite=False)
    assert open(target, "rb").read() == FILES["top.jpeg"]
    assert [n for n in os.listdir(os.path.dirname(target)) if n.startswith(".")] == []


def test_a_failed_copy_leaves_no_file(tmp_path, drop):
    target = str(tmp_path / "out" / "x.jpg")

    def explode(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        storage.write_atomically(target, explode)
    assert os.listdir(tmp_path / "out") == []


def test_new_version_goes_next_to_the_old(tmp_path, drop):
    root = str(tmp_path / "corpus")
    ingest_drop(drop, root, "v1")
    ingest_drop(drop, root, "v2")
    assert os.path.exists(f"{root}/original/v1/top.jpeg")
    assert os.path.exists(f"{root}/original/v2/top.jpeg")
    assert len(read_manifest(root, "v1")) == len(read_manifest(root, "v2")) == 3


def test_cli_lists_failures_and_exits_non_zero(tmp_path, drop, capsys):
    os.symlink("/etc/hostname", os.path.join(drop, "host.jpg"))
    root = str(tmp_path / "corpus")
    code = main(["ingest", drop, "--corpus", root, "--version", "v1", "--max-parallel", "3"])
    out = capsys.readouterr().out
    assert code == 1
    assert "3 new" in out and "host.jpg: symlink points outside the drop" in out
    rejected = [e for e in read_manifest(root, "v1") if e.rejected_reason]
    assert [e.source_path for e in rejected] == ["host.jpg"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--version", "../v1"], "invalid corpus version"),
        (["--max-parallel", "0"], "must be above 0"),
        (["--corpus", "/tmp/corpus[1]"], "wildcards"),
        (["--corpus", "DROP/corpus"], "inside the drop folder"),
    ],
)
def test_cli_rejects_bad_flags(tmp_path, drop, capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        argv = [arg.replace("DROP", drop) for arg in argv]
        main(["ingest", drop, "--corpus", str(tmp_path / "c"), "--version", "v1", *argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_drop_folder_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["ingest", str(tmp_path / "nope"), "--corpus", str(tmp_path), "--version", "v1"])
    assert "does not exist" in capsys.readouterr().err


def _name_of(total_bytes: int) -> str:
    """A file name of `total_bytes` UTF-8 bytes, with two-byte characters in it."""
    stem = "é" * ((total_bytes - 4) // 2) + "x" * ((total_bytes - 4) % 2)
    return stem + ".png"


def test_names_too_long_for_their_outputs_are_refused_at_ingest(tmp_path):
    from transforms.paths import MAX_FILE_NAME_BYTES
    from transforms.tasks.faces.crop import crop_name
    from transforms.tasks.thumbnail import thumbnail_name

    longest, too_long = _name_of(MAX_FILE_NAME_BYTES), _name_of(MAX_FILE_NAME_BYTES + 1)
    folder = str(tmp_path / "drop")
    image_factory.write_files(
        folder, {longest: image_factory.png_bytes(), too_long: image_factory.png_bytes()}
    )
    root = str(tmp_path / "corpus")
    report = ingest_drop(folder, root, "v1")
    assert report.copied == 1
    assert [(f.source_path, "longer than" in f.reason) for f in report.failed] == [(too_long, True)]
    # Every output named after the longest accepted name can be written.
    out = tmp_path / "out"
    for name in (thumbnail_name(longest), crop_name(longest, 1000)):
        storage.write_bytes_atomically(str(out / name), b"x")
    assert len(os.listdir(out)) == 2


def test_a_temporary_name_fits_however_long_the_name():
    target = "é" * 127 + "x"  # 255 bytes, the most a name may have
    assert len(storage._partial_name(target).encode()) <= 255


def test_a_folder_swapped_for_a_link_out_of_the_drop_after_the_scan_is_not_read(
    tmp_path, monkeypatch
):
    from transforms.corpus import ingest

    drop, elsewhere = tmp_path / "drop", tmp_path / "elsewhere"
    image_factory.write_files(str(drop), {"b/x.png": image_factory.png_bytes(32, 32)})
    image_factory.write_files(str(elsewhere), {"x.png": image_factory.png_bytes(40, 40)})
    real_scan = ingest.scan_drop

    def scan_then_swap(drop_dir):
        scan = real_scan(drop_dir)
        os.rename(drop / "b", tmp_path / "b-moved")
        os.symlink(elsewhere, drop / "b")  # the race: after the scan, before the copy
        return scan

    monkeypatch.setattr(ingest, "scan_drop", scan_then_swap)
    root = str(tmp_path / "corpus")
    report = ingest_drop(str(drop), root, "v1")
    assert report.copied == 0
    assert [(f.source_path, "another file" in f.reason) for f in report.failed] == [
        ("b/x.png", True)
    ]
    assert not os.path.exists(f"{root}/original/b/v1/x.png")
