"""The report page in a real headless browser (Debian's Chromium through playwright-python).

`check_report_in_browser` is reusable: the end-to-end Snakemake test calls it on the demo report.
Screenshots at 375 and 1,400 px wide land in test-artifacts/. Skips when Chromium or playwright
is absent, unless CIFARLAB_REQUIRE_BROWSER=1 (CI), where it fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CIFARLAB_CHROMIUM", "/usr/bin/chromium")
# No network, no background services: the page must render from its own bytes.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 390, "height": 844}  # CSS pixels of a common phone
# The widths (CSS pixels) at which the intervals must be legible: a small phone and a desktop window.
WIDTHS = (375, 1400)
# Columns of the runs tables that hold a run's accuracy over its seeds.
INTERVAL_COLUMNS = ("test acc. %", "95 % interval")


def browser_missing() -> str | None:
    """Why the browser check cannot run here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[test]'"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver"
    return None


def require_browser() -> None:
    """Skip (or fail under CIFARLAB_REQUIRE_BROWSER=1) when the browser check cannot run."""
    reason = browser_missing()
    if reason and os.environ.get("CIFARLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"CIFARLAB_REQUIRE_BROWSER=1 but {reason}")
    if reason:
        pytest.skip(reason)


def check_report_in_browser(
    html_path: str | Path, expected_rows: int, name: str | None = None, widths: tuple[int, ...] = WIDTHS
) -> Path:
    """Open the report in headless Chromium at each of `widths` and check it; return the path of the
    full-page screenshot at the first width (each width leaves one: `<name>-report-<width>px.png`).

    Checks: every image decodes (naturalWidth > 0), the runs tables (one per dataset) have
    `expected_rows` body rows in all, the console has no errors, the page asks for nothing but its
    own data: URIs, the page does not scroll sideways (only the tables do, inside their boxes), and
    every mean ± sd and interval cell is legible: on one line, unclipped, in at least 11 px type.
    Raises AssertionError naming what failed.
    """
    from playwright.sync_api import sync_playwright

    html_path = Path(html_path).resolve()
    ARTIFACTS.mkdir(exist_ok=True)
    screenshots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for width in widths:
                screenshot = ARTIFACTS / f"{name or html_path.parent.name}-report-{width}px.png"
                _check_at_width(browser, html_path, expected_rows, width, screenshot)
                screenshots.append(screenshot)
        finally:
            browser.close()
    return screenshots[0]


# Per runs table, the cells of INTERVAL_COLUMNS that are not legible: wrapped onto a second line,
# clipped, or in type under 11 px.
_ILLEGIBLE_CELLS = """(columns) => [...document.querySelectorAll("table.runs")].flatMap((table) => {
    const headers = [...table.tHead.rows[0].cells].map((c) => c.textContent);
    const at = columns.map((c) => headers.indexOf(c)).filter((i) => i >= 0);
    return [...table.tBodies[0].rows].flatMap((row) => at.map((i) => row.cells[i])).filter((cell) => {
        const range = document.createRange();
        range.selectNodeContents(cell);
        const lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
        const small = parseFloat(getComputedStyle(cell).fontSize) < 11;
        return small || cell.scrollWidth > cell.clientWidth + 1 || lines > 1;
    }).map((cell) => cell.textContent);
})"""


def _check_at_width(browser, html_path: Path, expected_rows: int, width: int, screenshot: Path) -> None:
    errors: list[str] = []
    requests: list[str] = []
    page = browser.new_page(viewport={"width": width, "height": PHONE["height"]})
    try:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(html_path.as_uri(), wait_until="load")
        # decode() settles once each image (open <details> or not) has decoded, or rejects.
        images = page.evaluate(
            """async () => Promise.all([...document.images].map(async (img) => {
                   try { await img.decode(); } catch (e) {}
                   return {alt: img.alt, width: img.naturalWidth};
               }))"""
        )
        rows = page.locator("table.runs > tbody > tr").count()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        illegible = page.evaluate(_ILLEGIBLE_CELLS, list(INTERVAL_COLUMNS))
        page.screenshot(path=str(screenshot), full_page=True)
    finally:
        page.close()
    broken = [i["alt"] for i in images if i["width"] <= 0]
    external = [u for u in requests if not u.startswith(("data:", html_path.as_uri()))]
    assert images, f"{html_path} shows no images"
    assert not broken, f"{len(broken)} image(s) did not load: {broken}"
    assert rows == expected_rows, f"the runs tables have {rows} rows, expected {expected_rows}"
    assert not errors, f"console errors: {errors}"
    assert not external, f"the page requested external resources: {external}"
    assert overflow <= 1, (
        f"at {width} px the page is {overflow} px wider than the screen; wide content must scroll in a box"
    )
    assert not illegible, f"at {width} px these mean ± sd / interval cells are not legible: {illegible}"


def test_report_in_browser(tmp_path):
    require_browser()
    from test_report import SEEDS_OF, build_report, write_study

    runs = write_study(tmp_path)
    build_report(tmp_path, runs)
    rows = len(SEEDS_OF)  # one per dataset and run, over the two datasets' tables
    screenshot = check_report_in_browser(tmp_path / "results/report/index.html", rows, name="synthetic")
    assert screenshot.stat().st_size > 0
    for width in WIDTHS:  # one full-page screenshot per width, to look at
        assert (ARTIFACTS / f"synthetic-report-{width}px.png").stat().st_size > 0


def test_broken_image_is_caught(tmp_path):
    """The check fails on a page whose image does not decode, so a pass means something."""
    require_browser()
    page = tmp_path / "index.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img alt="bad" src="data:image/png;base64,AAAA">'
        '<table class="runs"><thead><tr><th>run</th></tr></thead><tbody><tr><td>a</td></tr></tbody>'
        "</table></body></html>"
    )
    with pytest.raises(AssertionError, match="did not load"):
        check_report_in_browser(page, 1, name="broken")


def test_a_wrapped_interval_is_caught(tmp_path):
    """The legibility check fails on an interval squeezed onto two lines."""
    require_browser()
    page = tmp_path / "index.html"
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
    page.write_text(
        f'<!DOCTYPE html><html><body><img alt="ok" src="data:image/png;base64,{pixel}">'
        '<table class="runs" style="width: 60px"><thead><tr><th>95 % interval</th></tr></thead>'
        "<tbody><tr><td>63.23 – 65.72</td></tr></tbody></table></body></html>"
    )
    with pytest.raises(AssertionError, match="not legible"):
        check_report_in_browser(page, 1, name="wrapped", widths=(375,))
