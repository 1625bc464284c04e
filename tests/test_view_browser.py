"""`sgtool view` in a real browser: headless Chromium (Debian's chromium + chromium-driver) via Selenium
opens the site from disk and checks its numbers against the evaluator, filtering, hover and keyboard
navigation, and writes a screenshot of each page type. Skipped where Chromium or its driver is missing,
except in CI (the CI environment variable set), where that is a failure: .ci/run installs them."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import pytest

from sgtool.viz.view import build_view
from view_fixtures import evaluator, image_counts, make_view_workspace

K = 5
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000")


def require_browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths; skips without them, or fails when the CI environment variable is set."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
        missing = []
    except ImportError:
        missing = ["selenium"]
    missing += [name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path]
    if missing:
        message = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver; pip install selenium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    path, driver_path = require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="sgtool-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = path
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    view = make_view_workspace(tmp_path_factory.mktemp("browser") / "ws")
    outcome = build_view(view.ws, runs=view.runs, out=view.ws.root / "site", top=K)
    return view, outcome.path


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


def open_page(driver, path, selector):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.as_uri() if not isinstance(path, str) else path)
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, selector))


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver, shots, name) -> None:
    path = shots / f"{name}.png"
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    print(f"screenshot: {path}")


def css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def test_overview_shows_the_numbers_of_sgtool_eval(browser, site, shots, cli):
    view, folder = site
    open_page(browser, folder / "index.html", "#metrics td")
    assert console_errors(browser) == []
    for run in view.runs:
        evaluated = json.loads(cli("-w", view.ws.root, "--json", "eval", "--run", run).out)["metrics"]
        cells = {c.get_attribute("data-metric"): c for c in css(browser, f'#metrics td[data-run="{run}"]')}
        for name, value in evaluated.items():
            assert cells[name].text == ("n/a" if value is None else f"{100 * value:.2f}"), name
            assert json.loads(cells[name].get_attribute("data-value")) == pytest.approx(value)
        assert len(css(browser, f'.confusion[data-run="{run}"] tbody tr')) == len(view.prepared.vocab.predicates)
    assert len(css(browser, "#per-predicate .bar")) == len(view.runs) * len(view.prepared.vocab.predicates)
    screenshot(browser, shots, "overview")


def test_gallery_filters_and_sorts_like_the_evaluator(browser, site, shots):
    from selenium.webdriver.support.ui import Select

    view, folder = site
    open_page(browser, folder / "gallery.html", "#cards .card")
    assert len(css(browser, "#cards .card")) == 8 and console_errors(browser) == []
    gt = view.prepared.graphs.split_subset("test")
    engine = evaluator(view, view.runs[1], K)
    missed = (engine.hits.gt_rank >= K) & (gt.relations.predicates == 1)
    owner = np.repeat(np.arange(gt.num_images), gt.relations.counts())
    Select(css(browser, "#run")[0]).select_by_value("1")
    Select(css(browser, "#pred")[0]).select_by_value("1")
    Select(css(browser, "#status")[0]).select_by_value("miss")
    shown = [int(c.get_attribute("data-i")) for c in css(browser, "#cards .card")]
    assert shown == sorted(set(owner[missed].tolist()))
    Select(css(browser, "#status")[0]).select_by_value("any")
    Select(css(browser, "#pred")[0]).select_by_value("0")
    Select(css(browser, "#sort")[0]).select_by_value("recall-1")
    Select(css(browser, "#dir")[0]).select_by_value("desc")
    recall = np.bincount(owner, weights=engine.hits.gt_rank < K) / gt.relations.counts()
    shown = [int(c.get_attribute("data-i")) for c in css(browser, "#cards .card")]
    assert shown == sorted(range(gt.num_images), key=lambda i: (-recall[i], i))
    assert console_errors(browser) == []
    screenshot(browser, shots, "gallery")


def test_image_page_marks_hits_false_positives_and_misses(browser, site, shots):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    view, folder = site
    results = [evaluator(view, run, K) for run in view.runs]
    image = next(i for i in range(8) if all(image_counts(r, i, K)[2] > 0 for r in results[:1]))
    open_page(browser, f"{(folder / 'image.html').as_uri()}#i={image}", ".panel[data-hits] li")
    assert console_errors(browser) == [] and len(css(browser, ".graph canvas")) > 0
    for run, result in zip(view.runs, results):
        panel = css(browser, f'.panel[data-run="{run}"]')[0]
        hits, fps, misses = image_counts(result, image, K)
        shown = tuple(int(panel.get_attribute(f"data-{n}")) for n in ("hits", "fps", "misses"))
        assert shown == (hits, fps, misses)
        assert len(panel.find_elements("css selector", "li.fp")) == fps
        assert len(panel.find_elements("css selector", "li.miss")) == misses
    item = css(browser, f'.panel[data-run="{view.runs[0]}"] li.miss')[0]
    ActionChains(browser).move_to_element(item).perform()
    boxes = view.prepared.graphs.split_subset("test")
    lo = boxes.box_offsets[image]
    expected = [boxes.boxes[lo + int(item.get_attribute(f"data-{end}"))] for end in ("s", "o")]
    drawn = [float(r.get_attribute(a)) for r in css(browser, "#highlight rect") for a in ("x", "y", "width", "height")]
    assert drawn == pytest.approx([v for b in expected for v in (b[0], b[1], b[2] - b[0], b[3] - b[1])], abs=0.11)
    screenshot(browser, shots, "image")
    browser.find_element("tag name", "body").send_keys(Keys.ARROW_RIGHT)
    open_page(browser, browser.current_url, f'#image-title[data-i="{image + 1}"]')
    browser.find_element("tag name", "body").send_keys(Keys.ARROW_LEFT)
    open_page(browser, browser.current_url, f'#image-title[data-i="{image}"]')
    assert console_errors(browser) == []
