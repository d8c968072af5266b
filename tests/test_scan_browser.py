"""The scan's index.html in headless Chromium: no console errors, no requests, no CSP
violations; hostile capture names stay text; the table sorts and filters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_report_html import assert_clean, browser, open_page, screenshot  # noqa: F401
from test_scan import sample

from tdslens.analyzer.scan import ScanOptions, scan

HOSTILE = "<img src=x onerror=alert(1)>.pcap"


def test_index_in_a_browser(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    tree = tmp_path / "in"
    tree.mkdir()
    names = [
        "redirect_blocked__tedious.pcap",
        "redirect_ok__tedious.pcap",
        "redirect_refused__tedious.pcap",
        "redirect_nxdomain__tsql.pcap",
    ]
    for name in names:
        (tree / name).write_bytes(sample(name))
    (tree / HOSTILE).write_bytes(sample("redirect_blocked__tsql.pcap"))
    (tree / "broken.pcap").write_bytes(b"\xd4\xc3\xb2\xa1")
    (tree / "notes.txt").write_text("x")
    out = tmp_path / "out"
    scan([str(tree)], out, ScanOptions(workers=2))

    page = open_page(browser, out / "index.html")
    assert_clean(page, out / "index.html")
    rows = browser.find_elements(By.CSS_SELECTOR, "#captures tbody tr")
    assert len(rows) == 7
    assert browser.find_elements(By.CSS_SELECTOR, "svg circle")  # failures on the timeline
    assert any(HOSTILE in r.text for r in rows)  # shown as text, never run
    assert not browser.find_elements(By.CSS_SELECTOR, "#captures img")

    # sort by packets (column 5), twice: ascending, then descending
    header = browser.find_elements(By.CSS_SELECTOR, "#captures thead th")[4]
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    first = browser.find_element(By.CSS_SELECTOR, "#captures tbody tr")
    packets = [
        int(c.text)
        for c in browser.find_elements(By.CSS_SELECTOR, "#captures tbody td:nth-child(5)")
        if c.text
    ]
    assert packets == sorted(packets, reverse=True) and first.text

    screenshot(browser, "scan-index", tmp_path)
    box = browser.find_element(By.ID, "filter")
    box.send_keys("refused")
    visible = [
        r for r in browser.find_elements(By.CSS_SELECTOR, "#captures tbody tr") if r.is_displayed()
    ]
    assert len(visible) == 1 and "redirect_refused__tedious" in visible[0].text
    assert browser.find_element(By.ID, "shown").text == "1"
    assert open_page(browser, out / "index.html")["alerts"] == []
