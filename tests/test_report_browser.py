"""The report of the sample run, opened in headless Chromium from its folder: every
picture on every page loads, the people page shows the gallery's people with their
matched faces, and the images page filters by OCR text. A screenshot of each page is
written to build/report-screenshots/ for a person to look at."""

import glob
import os
import re
import time

import pytest

from beam_pipeline.cli import main
from tests import browser

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCREENSHOTS = os.path.join(REPO, "build", "report-screenshots")


@pytest.fixture(scope="module")
def report(sample_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("report") / "site")
    argv = ["report", "--corpus", sample_run["root"], "--version", "v1", "--out", out]
    assert main([*argv, "--gallery", sample_run["gallery"]]) == 0
    return out


@pytest.fixture(scope="module")
def chromium():
    with browser.chromium() as driver:
        yield driver


def test_every_picture_on_every_page_loads_and_nothing_is_fetched_from_elsewhere(report, chromium):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    pages = sorted(os.path.basename(page) for page in glob.glob(os.path.join(report, "*.html")))
    assert {"index.html", "people.html", "candidates.html", "clusters.html", "images.html"} <= set(
        pages
    )
    pictures = 0
    for page in pages:
        loaded = browser.open_page(chromium, report, page)
        assert loaded["broken"] == [], (page, loaded["broken"])
        pictures += loaded["total"]
        chromium.save_screenshot(os.path.join(SCREENSHOTS, page.replace(".html", ".png")))
        source = open(os.path.join(report, page), encoding="utf-8").read()
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", source), page
    assert pictures > 16


def test_the_people_page_shows_the_gallery_people_with_their_matched_faces(report, chromium):
    browser.open_page(chromium, report, "people.html")
    people = {}
    for section in chromium.find_elements("css selector", "section.person"):
        name = section.find_element("css selector", "h2").text
        chips = section.find_elements("css selector", ".chips img")
        people[name] = [chip.get_property("naturalWidth") for chip in chips]
    assert set(people) == {"eileen-collins", "photographer"}
    assert all(len(chips) == 1 and chips[0] > 0 for chips in people.values()), people


def _filtered(chromium, field, text):
    box = chromium.find_element("id", field)
    box.clear()
    box.send_keys(text)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        paths = [p.text for p in chromium.find_elements("css selector", "#results .path")]
        count = chromium.find_element("id", "count").text
        if count.startswith(f"{len(paths)} of"):
            return paths
        time.sleep(0.1)
    raise AssertionError(f"the filter did not settle: {count}")


def test_the_images_page_filters_by_ocr_text_and_label(report, chromium, sample_run):
    browser.open_page(chromium, report, "images.html")
    everything = chromium.find_element("id", "count").text
    assert everything == f"{len(sample_run['images'])} of {len(sample_run['images'])} images"
    rendered = sorted(p for p in sample_run["images"] if p.startswith("documents/rendered/"))
    assert sorted(_filtered(chromium, "text", "tracing registry")) == rendered
    chromium.save_screenshot(os.path.join(SCREENSHOTS, "images-filtered-by-text.png"))
    assert _filtered(chromium, "text", "no such words anywhere") == []
    chromium.find_element("id", "text").clear()
    assert "food/coffee/coffee.png" in _filtered(chromium, "label", "espresso")
