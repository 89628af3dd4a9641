"""Headless Chromium through Selenium, with Debian's ``chromium`` and ``chromedriver`` (installed by .ci/run; no
driver download), for checks of the Prefect UI as a user sees it."""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Images on the page: (src prefix, natural width, natural height), once each has loaded or failed.
IMAGES_JS = """
return Array.from(document.images).map(i => [i.src.slice(0, 30), i.complete ? i.naturalWidth : -1,
                                           i.complete ? i.naturalHeight : -1]);
"""


def require_chromium() -> None:
    """Skip where no Chromium is installed, except under CI (FILS_REQUIRE_BROWSER=1), where its absence fails."""
    if Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file():
        return
    message = f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian: apt-get install chromium chromium-driver)"
    if os.environ.get("FILS_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def headless_chromium(width: int = 1440, height: int = 1000) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, timeout: float = 60, what: str = "the page") -> None:
    """Poll ``condition(driver)`` until true; on time-out fail with the page's visible text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition(driver):
            return
        time.sleep(0.5)
    body = driver.find_element("tag name", "body").text
    raise AssertionError(f"{what} did not appear in {timeout:.0f} s at {driver.current_url}; the page shows:\n{body[:2000]}")


def page_text(driver) -> str:
    return driver.find_element("tag name", "body").text


def images(driver) -> list[tuple[str, int, int]]:
    return [tuple(entry) for entry in driver.execute_script(IMAGES_JS)]
