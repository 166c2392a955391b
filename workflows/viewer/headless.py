"""Headless Chromium driven by Selenium, for the viewer's tests, benchmark and README screenshot.

WebGL2 comes from SwiftShader when there is no GPU. The flags keep Chromium off the network (a closed network
refuses its background connections) and the profile is a fresh folder each time. Nothing is downloaded: the
browser and its driver are found on this machine (Debian: `apt-get install chromium chromium-driver`) or named
by P2G_CHROMIUM / P2G_CHROMEDRIVER.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVER_PATHS = ("chromedriver", "/usr/lib/chromium/chromedriver", "/usr/lib/chromium-browser/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


class BrowserUnavailable(RuntimeError):
    """No Chromium, chromedriver or selenium here; the message says what to install."""


def find_browser() -> tuple[str, str]:
    """(chromium binary, chromedriver) paths, or BrowserUnavailable naming what is missing."""
    browser = os.environ.get("P2G_CHROMIUM") or next(filter(None, map(shutil.which, BROWSER_NAMES)), None)
    driver = os.environ.get("P2G_CHROMEDRIVER") or next(filter(None, map(shutil.which, DRIVER_PATHS)), None)
    missing = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path]
    if missing:
        raise BrowserUnavailable(
            f"no {' or '.join(missing)} found: install them (Debian: apt-get install chromium "
            f"chromium-driver) or set P2G_CHROMIUM / P2G_CHROMEDRIVER"
        )
    return browser, driver


@contextmanager
def chromium(width: int = 640, height: int = 480) -> Iterator:
    """A selenium Chrome driver on headless Chromium with a fresh profile, closed on exit."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise BrowserUnavailable("selenium is not installed: pip install selenium (in the dev extra)") from None
    browser, driver_path = find_browser()
    with tempfile.TemporaryDirectory(prefix="p2g-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in CHROMIUM_FLAGS + (f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            driver.set_window_size(width, height)
            driver.set_script_timeout(900)  # software WebGL draws a large field for many seconds per frame
            yield driver
        finally:
            driver.quit()


def open_viewer(driver, url: str, timeout: float = 60.0) -> dict:
    """Load the page and wait until the field is on the GPU; returns `p2g.info()` or raises with the page's error."""
    driver.get(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = driver.execute_script("return document.body && document.body.dataset.ready")
        if state == "1":
            return driver.execute_script("return p2g.info()")
        if state == "error":
            raise RuntimeError(f"the viewer page failed: {driver.execute_script('return document.body.dataset.error')}")
        time.sleep(0.05)
    raise TimeoutError(f"the viewer page at {url} was not ready after {timeout:.0f} s")


def save_screenshot(driver, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path
