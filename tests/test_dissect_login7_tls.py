"""LOGIN7 (MS-TDS 2.2.6.4) and TLS as SQL Server carries it (7.x in PRELOGIN, 8.0 first)."""

from __future__ import annotations

import datetime as dt

import pytest
import tds_bytes as tb

from tdslens.dissectors import events as ev
from tdslens.dissectors.login7 import parse_login7, tds_version_name
from tdslens.dissectors.session import Phase, TdsDirection
from tdslens.dissectors.tls import TlsDissector, TlsState

PASSWORD = "Tr0ub4dor&3-unique"


def of(events, cls):
    return [e for e in events if type(e) is cls]


# -- LOGIN7 -------------------------------------------------------------------------------------


def test_login7_2_2_6_4_fields():
    login = parse_login7(tb.login7(password=PASSWORD), frames=(5,), offset=52)
    assert isinstance(login, ev.Login7)
    assert tds_version_name(login.tds_version) == "7.4"
    assert (login.hostname, login.username, login.appname) == ("WS01", "alice", "tests")
    assert (login.servername, login.library, login.database) == ("db.example.net", "ODBC", "sales")
    assert login.packet_size == 4096 and login.client_pid == 1234
    assert login.client_id == "00:11:22:33:44:55"
    assert login.password_present and login.password_chars == len(PASSWORD)
    assert login.read_only_intent  # TypeFlags 0x20 (fReadOnlyIntent)
    assert not login.integrated_security
    assert [(f.id, f.data) for f in login.features] == [(0x0A, b"\x01")]  # UTF8_SUPPORT


def test_login7_2_2_6_4_fedauth_feature_data_is_not_kept():
    token_like = b"eyJhbGciOi" * 3
    login = parse_login7(
        tb.login7(features=[(0x02, b"\x02" + token_like), (0x0A, b"\x01")]), frames=(1,), offset=0
    )
    assert [f.id for f in login.features] == [0x02, 0x0A]
    assert login.features[0].data == b"" and login.features[0].length == 1 + len(token_like)


def test_login7_password_never_in_repr():
    """The password (clear or as obfuscated on the wire) appears in no event and no repr."""
    data = tb.message(0x10, tb.login7(password=PASSWORD), size=60)
    d = TdsDirection(True)
    events = d.feed(data, 1) + d.eof()
    text = repr(events) + str(events)
    obfuscated = bytes(((b << 4 | b >> 4) & 0xFF) ^ 0xA5 for b in PASSWORD.encode("utf-16-le"))
    assert PASSWORD not in text
    assert obfuscated.hex() not in text and repr(obfuscated)[2:-1] not in text
    login = of(events, ev.Login7)[0]
    for name in login.__slots__:
        value = getattr(login, name)
        assert not (isinstance(value, bytes | str) and PASSWORD in str(value))
    assert "password" not in {n for n in login.__slots__ if n != "password_chars"}


def test_login7_2_2_6_4_bad_offsets():
    data = bytearray(tb.login7())
    data[36 + 4 : 36 + 6] = (2000).to_bytes(2, "little")  # ibUserName past the end
    bad = parse_login7(bytes(data), frames=(1,), offset=0)
    assert isinstance(bad, ev.Malformed) and bad.code is ev.MalformedCode.BAD_LENGTH
    short = parse_login7(tb.login7()[:50], frames=(1,), offset=0)
    assert short.code is ev.MalformedCode.TRUNCATED


# -- TLS inside PRELOGIN (TDS 7.x) ------------------------------------------------------------


def test_tls_client_hello_in_prelogin_packets():
    hello = tb.tls_record(22, tb.client_hello(sni="srv.database.windows.net"), version=0x0301)
    d = TdsDirection(True)
    out = d.feed(tb.packet(0x12, tb.client_prelogin(0x01)) + tb.message(0x12, hello, size=64), 3)
    ch = of(out, ev.ClientHello)[0]
    assert ch.sni == "srv.database.windows.net" and ch.carrier is ev.TlsCarrier.TDS
    assert ch.supported_versions == (0x0304, 0x0303) and 0x1301 in ch.cipher_suites
    assert d.phase is Phase.TLS_HANDSHAKE


@pytest.mark.parametrize("ptype", [0x12, 0x04])
def test_tls_server_answer_in_0x12_or_0x04_packets(ptype):
    flight = tb.tls_record(22, tb.server_hello() + tb.handshake(14, b""))
    d = TdsDirection(False)
    out = d.feed(tb.packet(0x04, tb.server_prelogin(0x01)) + tb.packet(ptype, flight), 9)
    sh = of(out, ev.ServerHello)[0]
    assert sh.selected_version == 0x0303 and sh.cipher_suite == 0xC02F
    assert of(out, ev.TlsHandshake)[0].msg_type == 14
    assert d.phase is Phase.TLS_HANDSHAKE


def test_tls13_is_visible_only_in_supported_versions():
    t = TlsDissector(from_client=False)
    rec = tb.tls_record(22, tb.server_hello(version=0x0304, cipher=0x1301))
    out = t.feed(rec, ((len(rec), 1, 0),), ev.TlsCarrier.TDS)
    sh = out[0]
    assert sh.legacy_version == 0x0303 and sh.selected_version == 0x0304
    assert t.state is TlsState.ENCRYPTED


def test_tls_alert_in_clear_before_encryption():
    flight = tb.tls_record(21, b"\x02\x28")  # fatal handshake_failure
    d = TdsDirection(False)
    out = d.feed(tb.packet(0x04, tb.server_prelogin(0x01)) + tb.packet(0x12, flight), 4)
    alert = of(out, ev.TlsAlert)[0]
    assert (alert.level, alert.description) == (2, 40)


def test_tls_certificate_tls12():
    crypto = pytest.importorskip("cryptography")
    del crypto
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sql01.contoso.test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("sql01.contoso.test")]), False)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    chain = len(der).to_bytes(3, "big") + der
    body = len(chain).to_bytes(3, "big") + chain
    flight = tb.tls_record(22, tb.server_hello() + tb.handshake(11, body))
    d = TdsDirection(False)
    out = d.feed(tb.packet(0x04, tb.server_prelogin(0x01)) + tb.message(0x12, flight, size=100), 6)
    c = of(out, ev.Certificate)[0]
    assert c.subject == "CN=sql01.contoso.test" and c.san == ("sql01.contoso.test",)
    assert c.not_after.startswith("2025-01-01") and c.count == 1


def test_login_only_encryption_login7_in_raw_tls_then_clear_tds():
    """7.x ENCRYPT_OFF: handshake in PRELOGIN, LOGIN7 as raw TLS records, then clear TDS."""
    d = TdsDirection(True)
    data = tb.packet(0x12, tb.client_prelogin(0x00))
    data += tb.packet(0x12, tb.tls_record(22, tb.client_hello(tls13=False)))
    data += tb.packet(
        0x12,
        tb.tls_record(22, tb.handshake(16, bytes(33)))
        + tb.tls_record(20, b"\x01")
        + tb.tls_record(22, bytes(40)),
    )
    data += tb.tls_record(23, bytes(250))  # the LOGIN7, encrypted, straight on TCP
    data += tb.packet(0x01, b"\x00" * 30)
    out = d.feed(data, 1) + d.eof()
    assert not of(out, ev.ProtocolViolation)
    assert of(out, ev.EncryptedData)[0].carrier is ev.TlsCarrier.RAW
    assert of(out, ev.TlsHandshake)[-1].encrypted  # the Finished after ChangeCipherSpec
    assert of(out, ev.SqlBatch) and d.phase is Phase.CLOSED


def test_client_final_tls13_flight_raw_outside_tds():
    d = TdsDirection(True)
    data = tb.packet(0x12, tb.client_prelogin(0x01))
    data += tb.packet(0x12, tb.tls_record(22, tb.client_hello()))
    data += tb.tls_record(20, b"\x01") + tb.tls_record(23, bytes(53))  # CCS + Finished, raw
    out = d.feed(data, 2)
    assert not of(out, ev.ProtocolViolation)
    assert of(out, ev.ChangeCipherSpec)[0].carrier is ev.TlsCarrier.RAW
    assert d.phase is Phase.ENCRYPTED


def test_tds8_tls_first_alpn():
    d = TdsDirection(True)
    hello = tb.tls_record(22, tb.client_hello(alpn=["tds/8.0"]), version=0x0301)
    out = d.feed(hello + tb.tls_record(23, bytes(100)), 1)
    assert of(out, ev.ClientHello)[0].alpn == ("tds/8.0",)
    assert of(out, ev.ClientHello)[0].carrier is ev.TlsCarrier.RAW
    assert d.phase is Phase.TLS_FIRST and not of(out, ev.ProtocolViolation)


def test_server_hello_from_a_client_is_a_violation():
    t = TlsDissector(from_client=True)
    rec = tb.tls_record(22, tb.server_hello())
    out = t.feed(rec, ((len(rec), 1, 0),), ev.TlsCarrier.RAW)
    assert isinstance(out[0], ev.ProtocolViolation)


def test_tls_bad_record_header_is_malformed():
    t = TlsDissector(from_client=True)
    out = t.feed(b"\x16\x07\x07\x00\x05hello", ((10, 1, 0),), ev.TlsCarrier.TDS)
    assert out[0].code is ev.MalformedCode.BAD_HEADER


def test_tls13_hello_retry_request_keeps_the_handshake_in_clear():
    hrr = bytearray(tb.server_hello(version=0x0304, cipher=0x1301))
    hrr[6:38] = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
    t = TlsDissector(from_client=False)
    data = tb.tls_record(22, bytes(hrr)) + tb.tls_record(22, tb.server_hello(version=0x0304))
    out = t.feed(data, ((len(data), 1, 0),), ev.TlsCarrier.TDS)
    assert [type(e) for e in out] == [ev.ServerHello, ev.ServerHello]
    assert out[0].hello_retry_request and not out[1].hello_retry_request
    assert t.state is TlsState.ENCRYPTED
