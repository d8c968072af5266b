"""The HTML report says what a key log could not decrypt, per connection (issue 10, item 3)."""

from __future__ import annotations

from conftest import SAMPLES

from tdslens.analyzer.analysis import analyze, load_keylogs
from tdslens.reports.html import render_html


def test_undecrypted_records_are_listed_with_reason_and_frames():
    """FreeTDS tsql's TLS 1.3 LOGIN7 record fails authentication (the lab server rejected the
    same record), so one record stays encrypted: the report must say which and why."""
    path = SAMPLES / "proxy_ok__tsql.pcap"
    analysis = analyze(path, keylog=load_keylogs([str(path.with_suffix(".keys"))]))
    [conn] = [c for c in analysis.connections if c.decryption is not None]
    [left] = conn.decryption.undecrypted
    html = render_html(analysis)
    section = html[
        html.index('id="decryption"') : html.index("</section>", html.index('id="decryption"'))
    ]
    assert left.reason in section
    assert ", ".join(str(f) for f in left.frames[:10]) in section
    assert f"<td>{conn.decryption.records_decrypted}<td>" in section


def test_no_decryption_section_without_a_key_log():
    html = render_html(analyze(SAMPLES / "proxy_ok__tsql.pcap"))
    assert 'id="decryption"' not in html
