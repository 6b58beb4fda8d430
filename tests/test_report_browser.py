"""The report page in a real headless browser (Debian's Chromium through playwright-python).

`check_report_in_browser` is reusable: the end-to-end Snakemake test calls it on the demo report.
Skips when Chromium or playwright is absent, unless CIFARLAB_REQUIRE_BROWSER=1 (CI), where it fails.
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


def check_report_in_browser(html_path: str | Path, expected_rows: int, name: str | None = None) -> Path:
    """Open the report in headless Chromium and check it; return the path of a full-page screenshot.

    Checks: every image decodes (naturalWidth > 0), the runs table has `expected_rows` body rows,
    the console has no errors, the page asks for nothing but its own data: URIs, and at phone
    width the page does not scroll sideways (only the tables do, inside their boxes).
    Raises AssertionError naming what failed.
    """
    from playwright.sync_api import sync_playwright

    html_path = Path(html_path).resolve()
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / f"{name or html_path.parent.name}-report.png"
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=PHONE)
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
            rows = page.locator("table#runs > tbody > tr").count()
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    broken = [i["alt"] for i in images if i["width"] <= 0]
    external = [u for u in requests if not u.startswith(("data:", html_path.as_uri()))]
    assert images, f"{html_path} shows no images"
    assert not broken, f"{len(broken)} image(s) did not load: {broken}"
    assert rows == expected_rows, f"the runs table has {rows} rows, expected {expected_rows}"
    assert not errors, f"console errors: {errors}"
    assert not external, f"the page requested external resources: {external}"
    assert overflow <= 1, (
        f"the page is {overflow} px wider than a phone screen; wide content must scroll in a box"
    )
    return screenshot


def test_report_in_browser(tmp_path):
    require_browser()
    from test_report import build_report, write_study

    runs = write_study(tmp_path)
    build_report(tmp_path, runs)
    screenshot = check_report_in_browser(tmp_path / "results/report/index.html", len(runs), name="synthetic")
    assert screenshot.stat().st_size > 0


def test_broken_image_is_caught(tmp_path):
    """The check fails on a page whose image does not decode, so a pass means something."""
    require_browser()
    page = tmp_path / "index.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img alt="bad" src="data:image/png;base64,AAAA">'
        '<table id="runs"><tbody><tr><td>a</td></tr></tbody></table></body></html>'
    )
    with pytest.raises(AssertionError, match="did not load"):
        check_report_in_browser(page, 1, name="broken")
