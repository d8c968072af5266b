"""Phase labelling (issue 5, item 6) on real SQL Server captures, checked against tshark.

tshark tells, per frame, which TDS packet type and which TLS records it carries. From that alone
each frame's phase follows (PRELOGIN packet without TLS → PRELOGIN; PRELOGIN packet carrying TLS
→ TLS; LOGIN7 → LOGIN; first response after the login → login response; SQL batch → data), and
our phase ranges must contain every such frame. The mapping is written here from Wireshark's
fields, not from tdslens's events, so the two are independent.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SAMPLES

from tdslens.analyzer.analysis import analyze
from tdslens.analyzer.model import ConnectionRecord, PhaseName

PRELOGIN, LOGIN7, RESPONSE, SQL_BATCH = 18, 16, 4, 1


def tshark_frames(tshark: str, path: Path) -> list[tuple[int, int | None, bool, bool]]:
    """(frame, TDS type or None, carries a TLS handshake/CCS, carries raw TLS app data)."""
    out = subprocess.run(
        [
            tshark,
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "tds.type",
            "-e",
            "tls.record.content_type",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        number, tds_type, content = ([*line.split("\t"), "", ""])[:3]
        types = {int(t) for t in content.split(",") if t}
        rows.append(
            (
                int(number),
                int(tds_type.split(",")[0]) if tds_type else None,
                bool(types & {20, 21, 22}),
                types == {23},
            )
        )
    return rows


def expected_phases(rows: list[tuple[int, int | None, bool, bool]]) -> dict[int, PhaseName]:
    """Each TDS/TLS frame's phase, from Wireshark's view of the frame."""
    expected: dict[int, PhaseName] = {}
    logged_in = answered = False
    for number, tds_type, tls_handshake, tls_app in rows:
        if tds_type == PRELOGIN:
            expected[number] = PhaseName.TLS if tls_handshake else PhaseName.PRELOGIN
        elif tds_type == LOGIN7 or (tls_app and tds_type is None and not logged_in):
            expected[number] = PhaseName.LOGIN
            logged_in = True
        elif tds_type == RESPONSE and logged_in and not answered:
            expected[number] = PhaseName.LOGIN_RESPONSE
            answered = True
        elif tds_type in (SQL_BATCH, RESPONSE) and answered:
            expected[number] = PhaseName.DATA
    return expected


def only_connection(path: Path) -> ConnectionRecord:
    analysis = analyze(path)
    tds = [c for c in analysis.connections if c.protocol == "tds"]
    assert len(tds) == 1
    return tds[0]


@pytest.mark.parametrize(
    "name",
    [
        "arkime_tds7_sql2000_session.pcap",
        "beats_sql2019_login_select_tls.pcap",
        "beats_sql2022_login_tls.pcap",
    ],
)
def test_phase_ranges_hold_the_frames_wireshark_shows(name, shared_captures, tshark):
    path = shared_captures / name
    conn = only_connection(path)
    expected = expected_phases(tshark_frames(tshark, path))
    assert expected, "tshark decoded no TDS: the test would prove nothing"
    for frame, phase_name in expected.items():
        phase = conn.phase(phase_name)
        assert phase is not None, f"frame {frame}: no {phase_name.value} phase"
        assert phase.first_frame <= frame <= phase.last_frame, (frame, phase)


def test_cleartext_tds71_session_ladder(shared_captures):
    conn = only_connection(shared_captures / "arkime_tds7_sql2000_session.pcap")
    assert [p.name for p in conn.phases] == [
        PhaseName.TCP_HANDSHAKE,
        PhaseName.PRELOGIN,
        PhaseName.LOGIN,
        PhaseName.LOGIN_RESPONSE,
        PhaseName.DATA,
        PhaseName.CLOSE,
    ]
    assert not any(p.inferred for p in conn.phases)
    assert conn.prelogin.client_encryption == "off"
    assert conn.prelogin.server_encryption == "not_sup"
    assert conn.login.username == "testuser" and conn.login.password_present
    assert conn.response.login_ack and conn.response.tds_version == "7.1 SP1"
    assert [m.number for m in conn.response.messages] == [5701, 5703]
    assert conn.tls is None
    assert conn.reached is PhaseName.DATA


def test_login_inside_tls_is_inferred_and_the_clear_answer_decoded(shared_captures):
    """SQL Server's default "login-only" encryption: LOGIN7 travels in TLS, LOGINACK in clear."""
    conn = only_connection(shared_captures / "beats_sql2019_login_select_tls.pcap")
    login = conn.phase(PhaseName.LOGIN)
    assert login is not None and login.inferred
    assert conn.login is None  # hidden by TLS: nothing made up
    assert conn.tls.version == "TLS 1.2" and conn.tls.sni == "localhost"
    assert conn.tls.certificate_subject == "CN=SSL_Self_Signed_Fallback"
    assert conn.response.login_ack and conn.response.tds_version == "7.4"
    assert conn.tcp.conn_state == "S1"  # the capture ends before the close
    assert conn.phase(PhaseName.CLOSE) is None


def _deobfuscate(data: bytes) -> str:
    """MS-TDS 2.2.6.4: each password byte is nibble-swapped then XORed with 0xA5 (test-only)."""
    plain = bytes((((b ^ 0xA5) << 4) & 0xF0) | (((b ^ 0xA5) >> 4) & 0x0F) for b in data)
    return plain.decode("utf-16-le")


def test_the_password_appears_nowhere_in_the_analysis(shared_captures):
    """Decode the real password here, in the test, and look for it in everything we keep."""
    from scapy.all import TCP, rdpcap

    path = shared_captures / "arkime_tds7_sql2000_session.pcap"
    login7 = next(
        bytes(p[TCP].payload) for p in rdpcap(str(path)) if bytes(p[TCP].payload)[:1] == b"\x10"
    )
    body = login7[8:]
    offset = int.from_bytes(body[44:46], "little")
    length = int.from_bytes(body[46:48], "little")
    password = _deobfuscate(body[offset : offset + 2 * length])
    assert len(password) >= 3
    obfuscated = body[offset : offset + 2 * length]
    values = list(_all_values(analyze(path)))
    assert any("testuser" in v for v in values if isinstance(v, str))  # the walk sees values
    for value in values:
        if isinstance(value, str):
            assert password not in value, value
        elif isinstance(value, bytes | bytearray | memoryview):
            assert obfuscated not in bytes(value)


def _all_values(obj: object) -> Iterator[object]:
    """Every leaf value reachable from an analysis (dataclass fields, containers)."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _all_values(getattr(obj, f.name))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _all_values(k)
            yield from _all_values(v)
    elif isinstance(obj, list | tuple | set | frozenset):
        for v in obj:
            yield from _all_values(v)
    else:
        yield obj


def test_worker_leg_opening_with_tls_application_data_is_flagged(tshark):
    """FreeTDS tsql (lab sample) follows the redirect but sends TLS application data on the new
    socket with no handshake, and the worker hangs up. tshark says which frame first carries
    client payload on the worker stream and what its first byte is."""
    path = SAMPLES / "redirect_tls12__tsql.pcap"
    analysis = analyze(path)
    worker = next(c for c in analysis.connections if c.server.port == 11042)
    out = subprocess.run(
        [
            tshark,
            "-r",
            str(path),
            "-Y",
            f"tcp.stream eq {worker.stream} && tcp.len > 0 && tcp.dstport == 11042",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "tcp.payload",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    first_frame, first_payload = int(out[0]), bytes.fromhex(out[1])
    assert first_payload[0] == 23  # what the test is about: TLS application data first
    assert worker.protocol == "other"
    [problem] = worker.problems
    assert problem.what == "TLS without handshake"
    assert problem.frames == [first_frame]
