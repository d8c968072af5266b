"""Problems the analysis meets beside the capture reader's: a UDP port-53 payload that is not
DNS, and key log lines it cannot use (in a file, or in a pcapng Decryption Secrets Block).

Each becomes a capture problem naming where it is (the frame; or the key log and its line, which
are no frame) and what is wrong, the rest of the capture is analysed, and every report lists it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from craft import secrets_block, truncated, write_pcap, write_pcapng
from test_report_json import VALIDATOR

from tdslens.analyzer.analysis import analyze
from tdslens.reports.html import render_html
from tdslens.reports.json_report import to_json
from tdslens.reports.redact import redact
from tdslens.reports.terminal import render_text

pytest.importorskip("scapy")

MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}  # no ARP lookups


def _dns_capture(tmp_path: Path) -> Path:
    """Frame 1: a valid DNS query; frame 2: a UDP/53 datagram that is not DNS; frame 3: a DNS
    answer cut by the snap length."""
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    name = "mysrv.database.windows.net"
    udp = Ether(**MACS) / IP(src="10.0.0.5", dst="10.0.0.53") / UDP(sport=40000, dport=53)
    back = Ether(**MACS) / IP(src="10.0.0.53", dst="10.0.0.5") / UDP(sport=53, dport=40000)
    query = udp / DNS(id=7, rd=1, qd=DNSQR(qname=name))
    garbage = udp / b"\x00\x01not dns"
    answer = back / DNS(id=7, qr=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, rdata="10.1.1.1"))
    cut = truncated(answer, len(answer) - 6)
    return write_pcap(tmp_path / "dns.pcap", [query, garbage, cut])


def test_a_udp_53_payload_that_is_not_dns_is_a_problem_and_the_rest_is_analysed(tmp_path):
    path = _dns_capture(tmp_path)
    a = analyze(path)
    assert [(d.frame, list(d.names)) for d in a.dns] == [(1, ["mysrv.database.windows.net"])]
    assert [(p.path, p.frame) for p in a.problems] == [(str(path), 2), (str(path), 3)]
    garbage, cut = (p.message for p in a.problems)
    assert garbage == "UDP port 53 payload does not parse as DNS: 9 bytes, the header needs 12"
    assert cut == (
        "UDP port 53 payload does not parse as DNS: answer record cut short"
        " (80 of 86 bytes captured)"
    )
    assert str(a.problems[0]) == f"{path}: frame 2: {garbage}"


def test_every_report_lists_the_dns_problem(tmp_path):
    a = analyze(_dns_capture(tmp_path))
    line = "frame 2: UDP port 53 payload does not parse as DNS: 9 bytes, the header needs 12"
    assert f"problem: {line}" in render_text(a)
    assert {"frame": 2, "message": line.removeprefix("frame 2: ")} in to_json(a)["capture"][
        "problems"
    ]
    assert f"<li>{line}</li>" in render_html(a)


# -- key logs: a line of a file or of a secrets block is not a frame ---------------------------

BAD_RANDOM = "CLIENT_RANDOM zz " + "00" * 48


def _keylog_capture(tmp_path: Path) -> tuple[Path, Path]:
    """A pcapng holding a TLS key log block with a bad second line and a block of another type,
    and a key log file with a bad third line."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    udp = Ether(**MACS) / IP(src="10.0.0.5", dst="10.0.0.9") / UDP(sport=40000, dport=9)
    tls_keys = f"# comment\n{BAD_RANDOM}\n".encode()
    blocks = [(0, secrets_block("<", 0x544C534B, tls_keys)), (0, secrets_block("<", 0x1234, b""))]
    capture = write_pcapng(tmp_path / "dsb.pcapng", [udp / b"x"], blocks=blocks)
    keys = tmp_path / "bad.keys"
    keys.write_text(f"# comment\n\n{BAD_RANDOM}\n")
    return capture, keys


def test_key_log_problems_name_the_key_log_and_line_not_a_frame(tmp_path):
    capture, keys = _keylog_capture(tmp_path)
    a = analyze(capture, keylog=keys)
    bad = "bad_random: CLIENT_RANDOM: client random is not 64 hex digits"
    assert [(p.path, p.frame, p.message) for p in a.problems] == [
        (str(keys), None, f"key log bad.keys, line 3: {bad}"),
        (str(capture), None, f"key log in pcapng DSB #1, line 2: {bad}"),
        (
            str(capture),
            None,
            "key log in pcapng DSB #2: unsupported_block: secrets type 0x00001234",
        ),
    ]
    assert str(a.problems[0]) == f"{keys}: {a.problems[0].message}"
    assert str(a.problems[1]) == f"{capture}: {a.problems[1].message}"


def test_reports_show_key_log_problems_without_a_frame(tmp_path):
    capture, keys = _keylog_capture(tmp_path)
    a = analyze(capture, keylog=keys)
    messages = [p.message for p in a.problems]
    text = render_text(a).splitlines()
    assert [ln for ln in text if ln.startswith("  problem:")] == [
        f"  problem: {m}" for m in messages
    ]
    doc = to_json(a)
    assert doc["capture"]["problems"] == [{"frame": None, "message": m} for m in messages]
    assert not list(VALIDATOR.iter_errors(doc))
    html = render_html(a)
    assert all(f"<li>{m}</li>" in html for m in messages)


def test_redaction_hides_the_key_log_name_in_problems(tmp_path):
    capture, keys = _keylog_capture(tmp_path)
    doc = to_json(redact(analyze(capture, keylog=keys)))
    text = str(doc)
    assert "bad.keys" not in text and str(tmp_path) not in text
    assert doc["capture"]["problems"][0]["message"].startswith("key log capture-2.keys, line 3: ")


def test_capture_problems_make_one_finding_and_key_log_lines_none(tmp_path):
    """Every damaged frame is listed in one CAPTURE_INCOMPLETE finding (a capture with
    thousands of them must not bury the report), and a key log line is no capture damage."""
    dns = analyze(_dns_capture(tmp_path))
    [finding] = [f for f in dns.findings if f.code == "CAPTURE_INCOMPLETE"]
    assert finding.title == "2 part(s) of the capture could not be read as written"
    assert finding.frames == [2, 3]
    assert "frame 2: UDP port 53 payload does not parse as DNS" in finding.detail
    assert "(frame None)" not in render_text(dns)
    capture, keys = _keylog_capture(tmp_path)
    keyed = analyze(capture, keylog=keys)
    assert keyed.problems and not [f for f in keyed.findings if f.code == "CAPTURE_INCOMPLETE"]
    assert "frame None" not in render_text(keyed)
