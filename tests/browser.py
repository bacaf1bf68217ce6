"""Headless Chromium (Debian's `chromium` and `chromium-driver`) driven by Selenium,
for the report's page tests. Never downloads a browser or a driver."""

from __future__ import annotations

import contextlib
import os
import shutil

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} is missing: apt-get install chromium chromium-driver"
    return None


@contextlib.contextmanager
def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager never fetches anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# Loads every lazy image now and reports those that did not load.
BROKEN_IMAGES = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach((image) => { image.loading = "eager"; });
Promise.all(images.map((image) => image.complete ? null : new Promise((resolve) => {
  image.addEventListener("load", resolve); image.addEventListener("error", resolve);
}))).then(() => done({
  total: images.length,
  broken: images.filter((image) => !image.naturalWidth).map((image) => image.src),
}));
"""


def open_page(driver, folder: str, page: str) -> dict:
    """Opens a report page from disk; {total, broken} of its images once all loaded."""
    driver.set_script_timeout(60)
    driver.get("file://" + os.path.join(os.path.abspath(folder), page))
    return driver.execute_async_script(BROKEN_IMAGES)
