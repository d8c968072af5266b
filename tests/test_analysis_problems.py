"""Problems the analysis meets beside the capture reader's: a UDP port-53 payload that is not DNS.

Each becomes a capture problem naming the frame and what is wrong, the rest of the capture is
analysed, and every report lists it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from craft import truncated, write_pcap

from tdslens.analyzer.analysis import analyze
from tdslens.reports.html import render_html
from tdslens.reports.json_report import to_json
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
    assert [(d.frame, d.names) for d in a.dns] == [(1, ["mysrv.database.windows.net"])]
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
