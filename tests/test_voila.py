"""Notebook 12 as a web page: voila serves it on localhost (smoke size), a real headless browser
(Debian's ``chromium`` driven by selenium through ``chromium-driver``) fills the form like a
learner, presses the button and reads the answer.

Checked: a bad rating gives a message on the page and no traceback; then a good round shows the
four replies (the persona and user levels differ from the global one) and the five lists (the
personalized ones differ from popularity). A screenshot is saved to ``build/voila_12.png``.
If voila or the browser cannot start, the test fails at once with what to install; every wait
has a deadline, so it never hangs.
"""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from p13n_utils import config

pytestmark = pytest.mark.browser

NOTEBOOK = config.NOTEBOOKS_DIR / "12_your_own_user.ipynb"
SCREENSHOT = config.REPO_ROOT / "build" / "voila_12.png"
START_TIMEOUT_S = 90  # voila's server answers
PAGE_TIMEOUT_S = 600  # voila executes the whole notebook (smoke size) before the form shows
ROUND_TIMEOUT_S = 300  # one round after the button (about 20 s on a 2-core CPU, more when it is busy)
FACTS = "I collect vintage cameras.\nI am a vegan chef.\nI run marathons every spring."
RATINGS = "Alien (1979) = 5\nTerminator 2: Judgment Day (1991) = 4.5\nTitanic (1997) = 1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def voila(tmp_path_factory):
    """``(url, log_path)`` of a voila server serving notebook 12 in the smoke size."""
    try:
        import voila  # noqa: F401
    except ImportError:
        pytest.fail("voila is not installed in this environment: pip install -r requirements.txt", pytrace=False)
    port, log_path = _free_port(), tmp_path_factory.mktemp("voila") / "voila.log"
    env = dict(os.environ, P13N_RUN_SIZE="smoke", PYTHONPATH=str(config.REPO_ROOT))
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "voila", str(NOTEBOOK), "--no-browser", f"--port={port}",
                                 "--Voila.ip=127.0.0.1", "--show_tracebacks=False"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(config.REPO_ROOT))
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"voila exited with status {proc.returncode} before serving:\n{_tail(log_path)}",
                            pytrace=False)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"voila did not answer on port {port} within {START_TIMEOUT_S} s:\n{_tail(log_path)}",
                                pytrace=False)
                time.sleep(0.5)
        yield url, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _tail(path, n=3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven through Debian's chromedriver (no download)."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("the browser test needs Debian's chromium and chromium-driver: "
                    "apt-get install -y chromium chromium-driver", pytrace=False)
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,2600"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except WebDriverException as err:
        pytest.fail(f"the headless browser did not start: {err.msg}", pytrace=False)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    yield driver
    driver.quit()


def _wait(driver, found, timeout, what, log_path):
    """Poll ``found(driver)`` until it is truthy; fail early if the page shows an execution
    error, and after ``timeout`` seconds with what was awaited and voila's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found(driver)
        if value:
            return value
        source = driver.page_source
        if "Traceback" in source or "There was an error when executing cell" in source:
            pytest.fail(f"the page shows an error while waiting for {what}:\n{_tail(log_path)}", pytrace=False)
        time.sleep(1)
    pytest.fail(f"no {what} after {timeout} s:\n{_tail(log_path)}", pytrace=False)


def _one(css):
    from selenium.webdriver.common.by import By

    return lambda d: (d.find_elements(By.CSS_SELECTOR, css) or [None])[0]


def _replace(element, text):
    from selenium.webdriver.common.keys import Keys

    element.click()
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


def test_the_page_answers_a_learner_at_every_level(voila, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, log_path = voila
    browser.get(url)  # voila starts a kernel and executes the notebook before the page is complete
    facts = _wait(browser, _one(".p13n-facts textarea"), PAGE_TIMEOUT_S, "form (facts text area)", log_path)
    _replace(facts, FACTS)
    ratings = _one(".p13n-ratings textarea")(browser)
    _replace(ratings, "Zzz Not A Movie (1900) = 4")
    message = _one(".p13n-message input")(browser)
    _replace(message, "What do you cook for dinner?")
    go = _one("button.p13n-go")(browser)

    # bad input: a clear message on the page, no traceback
    go.click()
    error = _wait(browser, _one(".p13n-output .p13n-error"), ROUND_TIMEOUT_S, "message about the unknown title",
                  log_path)
    assert "No movie 'Zzz Not A Movie (1900)'" in error.text
    assert "Traceback" not in browser.page_source

    # the picker: search a title, pick its stars, add it; then the typed ratings
    _replace(ratings, RATINGS)
    search = _one(".p13n-search input")(browser)
    _replace(search, "Toy Story (1995)")
    Select(_one(".p13n-stars select")(browser)).select_by_index(0)  # five stars
    _one("button.p13n-add")(browser).click()
    _wait(browser, lambda d: "Toy Story (1995) = 5" in _one(".p13n-ratings textarea")(d).get_attribute("value"),
          30, "rating added by the picker", log_path)

    go.click()
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".p13n-output .p13n-list")) == 5,
          ROUND_TIMEOUT_S, "five recommendation lists", log_path)
    browser.execute_script("document.querySelector('.p13n-output').scrollIntoView()")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))

    replies = {e.get_attribute("data-level"): e.find_element(By.CSS_SELECTOR, ".p13n-reply-text").text
               for e in browser.find_elements(By.CSS_SELECTOR, ".p13n-output .p13n-reply")}
    assert set(replies) == {"global", "persona", "user", "user_rag"}, replies
    assert all(replies.values()), replies
    for level in ("persona", "user", "user_rag"):
        assert replies[level] != replies["global"], (level, replies)
    lists = {e.get_attribute("data-method"): e.text
             for e in browser.find_elements(By.CSS_SELECTOR, ".p13n-output .p13n-list")}
    assert len(lists) == 5
    for method in ("persona_popularity", "als_fold_in", "content_embed", "llm_profile"):
        assert lists[method].split("\n")[1:] != lists["popularity"].split("\n")[1:], method
    explain = _one(".p13n-output .p13n-explain")(browser)
    assert explain is not None and "I am a vegan chef." in explain.text
    assert "Traceback" not in browser.page_source
    assert SCREENSHOT.stat().st_size > 10_000
