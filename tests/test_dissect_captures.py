"""Real bytes from real SQL Servers, decoded by tdslens and compared with tshark.

The three captures (../shared/captures, see their README) are: a cleartext TDS 7.1 session to
SQL Server 2000, and TLS-in-PRELOGIN logins (login-only encryption) to SQL Server 2019 and 2022.
Wireshark is the independent reference wherever it decodes a field; where tdslens decodes more
(stream offsets, row counts per result, the raw-TLS LOGIN7 recognised as such), tests say so.
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import tds_bytes as tb

from tdslens.dissectors import events as ev
from tdslens.dissectors.session import Phase, TdsDirection
from tdslens.dissectors.tls import ContentType

CAPTURES = (
    "arkime_tds7_sql2000_session.pcap",
    "beats_sql2019_login_select_tls.pcap",
    "beats_sql2022_login_tls.pcap",
)
FIELDS = (
    "tds.type",
    "tds.length",
    "tds.status",
    "tds.prelogin.option.token",
    "tds.prelogin.option.version",
    "tds.prelogin.option.subbuild",
    "tds.prelogin.option.encryption",
    "tds.prelogin.option.threadid",
    "tds.prelogin.option.instopt",
    "tds.prelogin.option.mars",
    "tds.7login.version",
    "tds.7login.packet_size",
    "tds.7login.client_pid",
    "tds.7login.clientname",
    "tds.7login.username",
    "tds.7login.appname",
    "tds.7login.servername",
    "tds.7login.libraryname",
    "tds.envchange.type",
    "tds.envchange.newvalue_string",
    "tds.info.number",
    "tds.error.number",
    "tds.loginack.tdsversion",
    "tds.loginack.progname",
    "tds.done.status",
    "tds.done.donerowcount",
    "tds.done.donerowcount64",
    "tds.featureextack.featureid",
    "tds.colmetadata.colname",
    "tls.record.content_type",
    "tls.handshake.type",
    "tls.handshake.extensions_server_name",
    "tls.handshake.ciphersuite",
    "tls.handshake.extensions.supported_version",
    "x509sat.uTF8String",
)


def tshark_fields(tshark: str, path: Path) -> dict[int, dict[str, list[str]]]:
    cmd = [tshark, "-o", "tcp.reassemble_out_of_order:TRUE", "-r", str(path), "-T", "json"]
    cmd += ["-e", "frame.number"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, check=True, text=True).stdout
    frames = {}
    for pkt in json.loads(out):
        layers = pkt["_source"]["layers"]
        frames[int(layers.pop("frame.number")[0])] = layers
    return frames


def dissect(path: Path) -> dict[int, list[ev.Event]]:
    """Our events, keyed by the last frame of each (Wireshark shows a PDU where it completes)."""
    by_frame: dict[int, list[ev.Event]] = defaultdict(list)
    for conn in tb.capture_streams(path):
        sides = {True: TdsDirection(True), False: TdsDirection(False)}
        for chunk in conn:
            for e in tb.feed_chunk(sides[chunk.from_client], chunk):
                by_frame[e.frames[-1]].append(e)
        for side in sides.values():
            for e in side.eof():
                by_frame[e.frames[-1]].append(e)
    return by_frame


@pytest.fixture(scope="module", params=CAPTURES)
def both(request, shared_captures, tshark):
    path = shared_captures / request.param
    return request.param, dissect(path), tshark_fields(tshark, path)


def of(events, *classes):
    return [e for e in events if isinstance(e, classes)]


def test_no_malformed_violation_or_gap_in_real_captures(both):
    _name, ours, _ref = both
    bad = of(
        [e for es in ours.values() for e in es],
        ev.Malformed,
        ev.ProtocolViolation,
        ev.CannotContinue,
        ev.Resync,
    )
    assert bad == []


def test_packet_headers_2_2_3_1_agree_with_tshark(both):
    _name, ours, ref = both
    compared = 0
    for frame, fields in ref.items():
        if "tds.type" not in fields:
            continue
        pkts = of(ours[frame], ev.TdsPacket)
        assert [p.type for p in pkts] == [int(x) for x in fields["tds.type"]], frame
        assert [p.length for p in pkts] == [int(x) for x in fields["tds.length"]], frame
        assert [p.status for p in pkts] == [int(x, 16) for x in fields["tds.status"]], frame
        compared += 1
    ours_frames = {f for f, es in ours.items() if of(es, ev.TdsPacket)}
    assert ours_frames == {f for f, v in ref.items() if "tds.type" in v}
    assert compared >= 6


def test_prelogin_2_2_6_5_agrees_with_tshark(both):
    _name, ours, ref = both
    seen = 0
    for frame, es in ours.items():
        for p in of(es, ev.PreLogin):
            fields = ref[frame]
            tokens = [o.token for o in p.options] + [255]
            assert tokens == [int(x) for x in fields["tds.prelogin.option.token"]]
            major, minor, build, sub = p.version
            assert (major << 24 | minor << 16 | build) == int(
                fields["tds.prelogin.option.version"][0]
            )
            assert sub == int(fields["tds.prelogin.option.subbuild"][0])
            assert p.encryption == int(fields["tds.prelogin.option.encryption"][0])
            if "tds.prelogin.option.instopt" in fields:
                assert p.instance == fields["tds.prelogin.option.instopt"][0]
            if p.thread_id is not None:
                assert p.thread_id == int(fields["tds.prelogin.option.threadid"][0])
            if p.mars is not None:
                assert int(p.mars) == int(fields["tds.prelogin.option.mars"][0])
            seen += 1
    assert seen == 2  # one each way


def test_login7_2_2_6_4_agrees_with_tshark(both):
    name, ours, ref = both
    logins = [(f, e) for f, es in ours.items() for e in of(es, ev.Login7)]
    if name != "arkime_tds7_sql2000_session.pcap":
        # Login-only encryption: the LOGIN7 travels as TLS application data. tshark shows a
        # TLS record without TDS; we report the same record as EncryptedData carried RAW.
        assert logins == []
        raw = [e for es in ours.values() for e in of(es, ev.EncryptedData)]
        assert len(raw) == 1 and raw[0].carrier is ev.TlsCarrier.RAW
        assert "tds.type" not in ref[raw[0].frames[-1]]
        return
    ((frame, login),) = logins
    fields = ref[frame]
    assert login.tds_version == int(fields["tds.7login.version"][0], 16)
    assert login.packet_size == int(fields["tds.7login.packet_size"][0])
    assert login.client_pid == int(fields["tds.7login.client_pid"][0])
    assert login.hostname == fields["tds.7login.clientname"][0]
    assert login.username == fields["tds.7login.username"][0]
    assert login.appname == fields["tds.7login.appname"][0]
    assert login.servername == fields["tds.7login.servername"][0]
    assert login.library == fields["tds.7login.libraryname"][0]
    # tshark also prints the de-obfuscated password; tdslens keeps only its length.
    assert login.password_chars == 4 and "password" not in repr(login).replace("password_chars", "")
    # Disagreement: tshark shows ClientProgVer as 7 (big-endian read); MS-TDS 2.2.6.4 makes it
    # a little-endian DWORD like the other fixed fields, which gives 0x07000000.
    assert login.client_version == 0x07000000


def test_tokens_2_2_7_agree_with_tshark(both):
    _name, ours, ref = both
    for frame, fields in ref.items():
        es = ours.get(frame, [])
        envs = of(es, ev.EnvChange)
        if "tds.envchange.type" in fields:
            assert [e.type for e in envs] == [int(x) for x in fields["tds.envchange.type"]]
            strings = [e.new for e in envs if e.type in (1, 2, 3, 4, 5, 6, 13, 19)]
            assert strings == fields["tds.envchange.newvalue_string"]
        else:
            assert envs == []
        infos = [e.number for e in of(es, ev.Info)]
        assert infos == [int(x) for x in fields.get("tds.info.number", [])]
        errors = [e.number for e in of(es, ev.Error)]
        assert errors == [int(x) for x in fields.get("tds.error.number", [])]
        acks = of(es, ev.LoginAck)
        assert [a.tds_version for a in acks] == [
            int(x, 16) for x in fields.get("tds.loginack.tdsversion", [])
        ]
        assert [a.prog_name for a in acks] == fields.get("tds.loginack.progname", [])
        dones = of(es, ev.Done)
        if "tds.done.status" in fields:
            assert [d.status for d in dones] == [int(x, 16) for x in fields["tds.done.status"]]
        counts = fields.get("tds.done.donerowcount", fields.get("tds.done.donerowcount64", []))
        if counts:
            assert [d.row_count for d in dones] == [int(x) for x in counts]
        feats = [f.id for a in of(es, ev.FeatureExtAck) for f in a.features]
        if "tds.featureextack.featureid" in fields:
            assert [*feats, 255] == [int(x) for x in fields["tds.featureextack.featureid"]]
        cols = [c.name for m in of(es, ev.ColMetadata) for c in m.columns]
        assert cols == fields.get("tds.colmetadata.colname", [])


_CONTENT = {
    ev.ClientHello: ContentType.HANDSHAKE,
    ev.ServerHello: ContentType.HANDSHAKE,
    ev.Certificate: ContentType.HANDSHAKE,
    ev.TlsHandshake: ContentType.HANDSHAKE,
    ev.ChangeCipherSpec: ContentType.CHANGE_CIPHER_SPEC,
    ev.EncryptedData: ContentType.APPLICATION_DATA,
    ev.TlsAlert: ContentType.ALERT,
}


def test_tls_in_prelogin_agrees_with_tshark(both):
    name, ours, ref = both
    if name.startswith("arkime"):
        pytest.skip("cleartext session: no TLS")
    for frame, fields in ref.items():
        es = ours.get(frame, [])
        tls = [e for e in es if type(e) in _CONTENT]
        # Each record here holds one handshake message, so message and record lists align.
        assert [int(_CONTENT[type(e)]) for e in tls] == [
            int(x) for x in fields.get("tls.record.content_type", [])
        ], frame
        clear_types = []
        for e in tls:
            if isinstance(e, ev.ClientHello):
                clear_types.append(1)
                assert e.sni == fields["tls.handshake.extensions_server_name"][0]
                assert [f"0x{c:04x}" for c in e.cipher_suites] == fields[
                    "tls.handshake.ciphersuite"
                ]
                want = fields.get("tls.handshake.extensions.supported_version", [])
                assert [f"0x{v:04x}" for v in e.supported_versions] == want
            elif isinstance(e, ev.ServerHello):
                clear_types.append(2)
                assert [f"0x{e.cipher_suite:04x}"] == fields["tls.handshake.ciphersuite"]
                assert e.selected_version == 0x0303  # TLS 1.2: no supported_versions answer
            elif isinstance(e, ev.Certificate):
                clear_types.append(11)
                assert e.subject == "CN=" + fields["x509sat.uTF8String"][0]
            elif isinstance(e, ev.TlsHandshake) and not e.encrypted:
                clear_types.append(e.msg_type)
        assert clear_types == [int(x) for x in fields.get("tls.handshake.type", [])], frame


def test_login_only_encryption_phases(shared_captures):
    """Both TLS captures: handshake in PRELOGIN, LOGIN7 raw TLS, then clear TDS (session)."""
    for name in CAPTURES[1:]:
        (conn,) = tb.capture_streams(shared_captures / name)
        client, server = TdsDirection(True), TdsDirection(False)
        phases = {True: [], False: []}
        for chunk in conn:
            side = client if chunk.from_client else server
            side.feed(chunk.data, chunk.frame)
            if not phases[chunk.from_client] or phases[chunk.from_client][-1] is not side.phase:
                phases[chunk.from_client].append(side.phase)
        assert phases[True] == [Phase.PRELOGIN, Phase.TLS_HANDSHAKE, Phase.ENCRYPTED, Phase.SESSION]
        assert phases[False] == [Phase.PRELOGIN, Phase.TLS_HANDSHAKE, Phase.SESSION]


def test_captures_fed_byte_by_byte_give_the_same_events(shared_captures):
    for name in CAPTURES:
        for conn in tb.capture_streams(shared_captures / name):
            for from_client in (True, False):
                chunks = [c for c in conn if c.from_client is from_client]
                whole, trickle = TdsDirection(from_client), TdsDirection(from_client)
                a, b = [], []
                for c in chunks:
                    a += whole.feed(c.data, c.frame)
                    for i in range(len(c.data)):
                        b += trickle.feed(c.data[i : i + 1], c.frame)
                assert a == b
