"""``modelrail ui`` as a person sees it: the real command, in headless Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make browser`` installs them):
skips with the reason when they are missing, fails under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.conftest import REPO, STATE_DEADLINE_S, settings_env, wait_for
from tests.prerequisites import skip_or_fail
from tests.ui.conftest import History

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

MODELRAIL = Path(sys.executable).with_name("modelrail")
# Headless, and quiet: no GPU, no sandbox (root in CI containers), and none of the
# background traffic a first start sends (updates, sync, metrics): the tests run offline.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [
        name for name, path in (("chromium", chromium), ("chromium-driver", driver)) if not path
    ]
    skip_or_fail(
        f"Debian's {' and '.join(missing)} is not installed (`make browser` installs it)"
        if missing
        else None
    )
    assert chromium is not None
    assert driver is not None
    return chromium, driver


@pytest.fixture(scope="module")
def ui_url(history: History) -> Iterator[str]:
    """``modelrail ui`` on a free port of 127.0.0.1, over the history's home."""
    env = {**os.environ, **settings_env(history.home)}
    with subprocess.Popen(
        [str(MODELRAIL), "ui", "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()  # printed once the socket listens
            assert " at http://127.0.0.1:" in line, line
            url = line.split(" at ", 1)[1].split()[0]
            wait_for(lambda: requests.get(f"{url}/healthz", timeout=5).ok, "the UI to answer")
            yield url
        finally:
            server.terminate()
            server.wait(timeout=STATE_DEADLINE_S)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    chromium, driver_path = _browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        driver.set_page_load_timeout(STATE_DEADLINE_S)
        yield driver
    finally:
        driver.quit()  # stops chromium and chromedriver


def test_the_run_list_shows_a_failed_run_with_its_reason_and_a_deployed_run_with_its_stages(
    browser: WebDriver, ui_url: str, history: History
) -> None:
    browser.get(ui_url)

    failed = browser.find_element(By.ID, history.failed_run)
    assert "failed" in failed.find_element(By.CLASS_NAME, "outcome").text
    assert "contract_violation" in failed.text
    reasons = [li.text for li in failed.find_elements(By.CSS_SELECTOR, "ul.reasons li")]
    assert any("required column 'year' is missing" in reason for reason in reasons), reasons

    deployed = browser.find_element(By.ID, history.deployed_run)
    assert deployed.find_element(By.CLASS_NAME, "outcome").text == "deployed"
    stages = [li.text.split()[0] for li in deployed.find_elements(By.CSS_SELECTOR, "li.stage")]
    assert stages == ["validate", "launch_training", "train", "evaluate", "register", "deploy"]
    assert deployed.find_element(By.CSS_SELECTOR, "svg.timeline").is_displayed()


def test_a_run_opens_from_the_list(browser: WebDriver, ui_url: str, history: History) -> None:
    browser.get(ui_url)

    browser.find_element(By.LINK_TEXT, history.failed_run).click()

    assert history.failed_run in browser.title
    validate = browser.find_element(By.ID, "stage-validate")
    assert "failed (contract_violation)" in validate.text


def test_the_model_page_shows_version_1_and_its_card_opens(browser: WebDriver, ui_url: str) -> None:
    browser.get(f"{ui_url}/models/penguins")

    version = browser.find_element(By.ID, "v1")
    assert version.find_element(By.TAG_NAME, "td").text == "v1"
    assert "staging" in version.text
    assert browser.find_element(By.CSS_SELECTOR, "svg.plot").is_displayed()
    version.find_element(By.CLASS_NAME, "card-link").click()

    assert browser.title == "penguins v1 model card"
    assert browser.find_element(By.TAG_NAME, "h1").text == "penguins — version 1"
