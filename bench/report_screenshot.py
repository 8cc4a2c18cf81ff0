"""A screenshot of the first screen of a run's report.html, in headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium from the test extra):

    python -m bench.report_screenshot RUN OUT.png [--width 1280 --height 900]

`chrome()` is also the browser of tests/test_report_browser.py."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)


def _which(names) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


def missing() -> str | None:
    """Why no headless browser can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not _which(CHROMIUM):
        return "no chromium binary on PATH (Debian: apt-get install chromium)"
    if not _which(DRIVER):
        return "no chromedriver on PATH (Debian: apt-get install chromium-driver)"
    return None


def chrome(width: int = 1280, height: int = 900):
    """A headless Chromium WebDriver whose browser console log is readable (driver.get_log("browser"))."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = _which(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=_which(DRIVER)))
    # the window size includes the browser's frame: fix the page's viewport itself
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    return driver


def screenshot(report: Path, out: Path, width: int = 1280, height: int = 900) -> Path:
    """The first screen (width x height CSS pixels) of `report` as a PNG."""
    driver = chrome(width, height)
    try:
        driver.get(Path(report).resolve().as_uri())
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
    return Path(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report_screenshot", description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run directory holding report.html (nfebench report RUN writes it)")
    p.add_argument("out", help="the PNG to write")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=900)
    args = p.parse_args(argv)
    report = Path(args.run) / "report.html"
    why = missing() or (None if report.is_file() else f"no {report}: write it with nfebench report {args.run}")
    if why:
        print(f"report_screenshot: error: {why}", file=sys.stderr)
        return 2
    print(screenshot(report, Path(args.out), args.width, args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
