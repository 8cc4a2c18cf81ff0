"""The report in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`) through selenium.
The page loads with no console error, every image decodes, clicking a column header sorts the rows (ascending,
then descending, numbers as numbers, empty cells last), a filter hides rows, and the first screen's screenshot is
a PNG of the viewport. Skipped, with the reason, where the browser, its driver or selenium is missing."""
import math

import pytest
from PIL import Image

from bench import report, report_screenshot
from tests.test_report import FIGURES, make_run

WHY = report_screenshot.missing()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"headless Chromium unavailable: {WHY}")


def _chrome(*size):
    """The browser, or a skip naming why it did not start (installed but refused to run: e.g. under a
    virtual-memory limit, `ulimit -v`, Chromium aborts at start)."""
    from selenium.common.exceptions import WebDriverException
    try:
        return report_screenshot.chrome(*size)
    except WebDriverException as e:
        pytest.skip(f"headless Chromium is installed but did not start: {e.msg.strip().splitlines()[0]}")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    path = report.write_report(make_run(tmp_path_factory.mktemp("report") / "run"))
    driver = _chrome()
    try:
        driver.get(path.resolve().as_uri())
        yield driver
    finally:
        driver.quit()


def _column(driver, name):
    """The visible texts of the results table's column `name`, top to bottom."""
    return driver.execute_script("""
        const t = document.getElementById('results-table');
        const col = [...t.tHead.rows[0].cells].findIndex(th => th.textContent === arguments[0]);
        return [...t.tBodies[0].rows].filter(r => !r.hidden).map(r => r.cells[col].textContent);""", name)


def _header(driver, name):
    from selenium.webdriver.common.by import By
    return next(th for th in driver.find_elements(By.CSS_SELECTOR, "#results-table thead th") if th.text == name)


def _number(text):
    return math.inf if text == "–" else float(text.split()[0])


def test_loads_without_console_errors(page):
    assert page.title == "nfebench report: tiny"
    errors = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_every_image_decodes(page):
    sizes = page.execute_script(
        "return [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);")
    assert sorted(s[0] for s in sizes) == sorted(FIGURES.values())
    assert all(complete and w > 0 and h > 0 for _, complete, w, h in sizes), sizes


@pytest.mark.parametrize("name", ["FID", "KID"])
def test_clicking_a_header_sorts_numbers_as_numbers(page, name):
    header = _header(page, name)
    before = _column(page, name)
    header.click()
    up = _column(page, name)
    assert header.get_attribute("aria-sort") == "ascending"
    assert sorted(up) == sorted(before) and up != before
    assert [_number(t) for t in up] == sorted(_number(t) for t in up)   # empty cells ("–") last
    header.click()
    down = _column(page, name)
    assert header.get_attribute("aria-sort") == "descending"
    finite = [_number(t) for t in down if t != "–"]
    assert finite == sorted(finite, reverse=True) and down[len(finite):] == [t for t in down if t == "–"]
    nfe = _header(page, "NFE")
    nfe.click()
    assert _column(page, "NFE") == sorted(_column(page, "NFE"), key=int)
    assert header.get_attribute("aria-sort") is None


def test_a_filter_hides_rows(page):
    from selenium.webdriver.support.ui import Select
    total = len(_column(page, "model"))
    select = Select(page.find_element("css selector", "select[data-filter=guidance]"))
    select.select_by_value("4")
    shown = _column(page, "guidance")
    assert shown and set(shown) == {"4"} and len(shown) < total
    assert page.find_element("id", "shown").text == f"{len(shown)} of {total} rows"
    Select(page.find_element("css selector", "select[data-filter=family]")).select_by_value("other")
    assert set(_column(page, "family")) == {"other"} and set(_column(page, "guidance")) == {"4"}
    for name in ("guidance", "family"):
        Select(page.find_element("css selector", f"select[data-filter={name}]")).select_by_value("")
    assert len(_column(page, "model")) == total


def test_screenshot_of_the_first_screen(tmp_path):
    _chrome(800, 600).quit()   # skips where the browser cannot start
    run = make_run(tmp_path / "run")
    report.write_report(run)
    assert report_screenshot.main([str(run), str(tmp_path / "shot.png"), "--width", "800", "--height", "600"]) == 0
    with Image.open(tmp_path / "shot.png") as im:
        assert im.size == (800, 600)
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100   # text on the page, not a blank screen
