"""The package as workers get it: an sdist and a wheel built from it, installed (not
editable) into a fresh virtual environment that then lists the steps and runs."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests import image_factory
from tests.corpus_files import table_rows
from transforms.tables import schemas

REPO = Path(__file__).resolve().parent.parent


def _code_packages(root: Path) -> set[str]:
    """Every folder of the project's code, as a dotted package name."""
    return {
        ".".join(folder.relative_to(root).parts)
        for top in ("beam_pipeline", "transforms")
        for folder in [root / top, *(root / top).rglob("*")]
        if folder.is_dir() and any(folder.glob("*.py"))
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, bin folder) of a new environment holding the wheel built from the sdist."""
    base = tmp_path_factory.mktemp("package")
    source, dist, venv = base / "source", base / "dist", base / "venv"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in tracked)):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    # Without isolation: the build tools come from this environment, not the network.
    # The wheel is built from the sdist, so a file missing from the sdist fails here.
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
        capture_output=True,
        check=True,
    )
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The dependencies are this environment's; the project itself only the wheel's.
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = dist.glob("*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", str(wheel)],
        check=True,
    )  # fmt: skip
    return {"python": python, "bin": venv / "bin", "wheel": wheel, "base": base}


def test_the_wheel_holds_every_package_of_the_code(installed):
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        folders = {os.path.dirname(name) for name in wheel.namelist() if name.endswith(".py")}
    assert {folder.replace("/", ".") for folder in folders} >= _code_packages(REPO)


def test_the_installed_package_lists_its_steps_and_runs(installed, tmp_path):
    environment = {**os.environ, "PATH": f"{installed['bin']}{os.pathsep}{os.environ['PATH']}"}
    where = subprocess.run(
        [installed["python"], "-c", "import transforms; print(transforms.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(installed["base"]) in where and str(REPO) not in where

    def imaginem(*argv):
        done = subprocess.run(
            ["imaginem", *argv], cwd=tmp_path, env=environment, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    steps = imaginem("steps")
    assert "facematch" in steps and "ocr" in steps
    drop, root = tmp_path / "drop", str(tmp_path / "corpus")
    files = {
        "a/one.png": image_factory.png_bytes(),
        "b/two.jpg": image_factory.jpeg_bytes(),
        "b/bad.jpg": b"not an image",
    }
    image_factory.write_files(str(drop), files)
    imaginem("ingest", str(drop), "--corpus", root, "--version", "v1")
    steps = "thumbnail,ocr,facedetection"
    imaginem("run", "--corpus", root, "--version", "v1", "--steps", steps)
    images = table_rows(root, schemas.IMAGES)
    assert sorted(row["source_path"] for row in images) == ["a/one.png", "b/two.jpg"]
    assert all(row["ocr"] is not None and row["facedetection"] is not None for row in images)
    assert [row["path"] for row in table_rows(root, schemas.ERRORS)] == ["b/bad.jpg"]
