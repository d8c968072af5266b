"""Decryption wired into the pipeline: the lab samples read with the key logs their drivers wrote.

The lab's expected files come from the simulated server's own log (samples/lab), not from
tdslens, so the LOGIN7 user name, the routing target and the 18456 error found inside TLS are
checked against an independent record. Giving the key log must not change what the capture
says otherwise: the same roles, links and findings, only with better evidence.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES

from tdslens.analyzer.analysis import analyze
from tdslens.analyzer.model import Analysis, ConnectionRecord, LinkEvidence, PhaseName

EXPECTED = [json.loads(p.read_text()) for p in sorted(SAMPLES.glob("*.json"))]
KEYED = [e for e in EXPECTED if e.get("keylog") and (SAMPLES / e["keylog"]).exists()]
ENCRYPTED_LOGIN = ("full", "strict", "login_only")
# Scenarios whose routing token, login or login error hides inside TLS without the key log.
EQUIVALENCE_SCENARIOS = (
    "redirect_",
    "readonly_routing",
    "proxy_",
    "strict_proxy",
    "strict_redirect",
    "login_failed_tls",
)


def _id(e: dict) -> str:
    return Path(e["capture"]).stem


def _keys(e: dict) -> Path:
    return SAMPLES / e["keylog"]


def _record(a: Analysis, conn: dict) -> ConnectionRecord:
    client, server = tuple(conn["client"]), tuple(conn["server"])
    (record,) = [
        r
        for r in a.connections
        if (r.client.address, r.client.port) == client
        and (r.server.address, r.server.port) == server
    ]
    return record


def _tcp(e: dict) -> list[dict]:
    return [c for c in e["connections"] if c["transport"] == "tcp"]


def test_there_are_keyed_samples():
    assert len(KEYED) >= 80  # every run with a TLS session; a run without one has no key log
    assert any(e["scenario"] == "login_failed_tls" for e in KEYED)


@pytest.mark.parametrize("e", KEYED, ids=_id)
def test_decrypted_login_and_routing_match_the_server_log(e: dict):
    a = analyze(SAMPLES / e["capture"], keylog=_keys(e))
    for conn in _tcp(e):
        record = _record(a, conn)
        if conn.get("login"):
            assert record.login is not None, conn["role"]
            assert record.login.username == conn["login"]["username"]
            if conn.get("encryption") in ENCRYPTED_LOGIN:
                assert record.login.decrypted
                assert not record.phase(PhaseName.LOGIN).inferred
        routing = conn.get("routing")
        if routing:
            assert record.response is not None and record.response.routing is not None
            assert record.response.routing.server == routing["host"]
            assert record.response.routing.port == routing["port"]
            if conn.get("encryption") in ("full", "strict"):
                assert record.response.routing.decrypted
            (red,) = [r for r in a.redirects if r.gateway == record.stream]
            assert red.evidence is LinkEvidence.ROUTING_TOKEN
            assert (red.target_host, red.target_port) == (routing["host"], routing["port"])
        if conn.get("error_number"):
            numbers = [m.number for m in (record.response.messages if record.response else [])]
            assert conn["error_number"] in numbers


@pytest.mark.parametrize("e", [e for e in KEYED if e["scenario"] == "login_failed_tls"], ids=_id)
def test_login_failure_inside_tls_gives_the_exact_error(e: dict):
    a = analyze(SAMPLES / e["capture"], keylog=_keys(e))
    failed = [c for c in _tcp(e) if c.get("error_number")]
    for conn in failed:
        record = _record(a, conn)
        assert record.response is not None and record.response.decrypted
        (error,) = [m for m in record.response.messages if m.kind == "error"]
        assert (error.number, error.state) == (18456, 1)  # the lab's gateway always says state 1
        assert "Login failed for user" in error.message
    if failed:
        assert "LOGIN_FAILED" in {f.code for f in a.findings}
        assert a.verdict is not None and a.verdict.result == "failed"


def _summary(a: Analysis) -> tuple:
    """Roles, links (without their evidence) and finding codes."""
    links = [(r.gateway, r.outcome, tuple(r.second_legs)) for r in a.redirects]
    roles = [(r.stream, r.role) for r in a.roles]
    return roles, links, sorted(f.code for f in a.findings)


def _hidden_result_findings(a: Analysis) -> list[str]:
    """Findings that exist only because TLS hid the login result: LOGIN_RESULT_HIDDEN, and the
    CAPTURE_INCOMPLETE "only port 1433" warning that a hidden result (a possible redirect the
    filter cut away) raises. Reading the 18456 inside TLS answers both."""
    return [
        f.code
        for f in a.findings
        if f.code == "LOGIN_RESULT_HIDDEN"
        or (f.code == "CAPTURE_INCOMPLETE" and f.title.startswith("Only port 1433"))
    ]


@pytest.mark.parametrize(
    "e", [e for e in KEYED if e["scenario"].startswith(EQUIVALENCE_SCENARIOS)], ids=_id
)
def test_keys_change_only_the_evidence(e: dict):
    """Without keys every link is inferred; with them it is routing_token, with the same
    gateway, outcome and second legs (and the target port, unknown without keys after a failed
    DNS lookup, now read from the token). The only findings that change are those of a hidden
    login result (LOGIN_RESULT_HIDDEN and the "only port 1433" CAPTURE_INCOMPLETE), which become
    LOGIN_FAILED when the 18456 inside TLS is readable."""
    plain = analyze(SAMPLES / e["capture"])
    keyed = analyze(SAMPLES / e["capture"], keylog=_keys(e))
    roles, links, codes = _summary(plain)
    if "LOGIN_FAILED" in _summary(keyed)[2] and "LOGIN_FAILED" not in codes:
        for code in _hidden_result_findings(plain):
            codes.remove(code)
        codes = sorted([*codes, "LOGIN_FAILED"])
    assert _summary(keyed) == (roles, links, codes)
    for before, after in zip(plain.redirects, keyed.redirects, strict=True):
        assert after.evidence is LinkEvidence.ROUTING_TOKEN, (before.evidence, after.reasons)
        if before.target_host is not None:
            assert after.target_host == before.target_host
        if before.target_port is not None:
            assert after.target_port == before.target_port


# -- where the keys come from: files, several files, the capture's own secrets blocks ---------


def _with_dsb(tshark: str, capture: Path, keys: Path, out: Path) -> Path:
    """A pcapng carrying the key log in a Decryption Secrets Block (editcap ships with tshark)."""
    editcap = str(Path(tshark).with_name("editcap"))
    subprocess.run(
        [editcap, "--inject-secrets", f"tls,{keys}", str(capture), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def _routing_evidence(a: Analysis) -> list[LinkEvidence]:
    return [r.evidence for r in a.redirects]


REDIRECT = SAMPLES / "redirect_ok__pytds.pcap"
REDIRECT_KEYS = SAMPLES / "redirect_ok__pytds.keys"


def _key_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_a_pcapng_with_secrets_decrypts_without_a_key_log(tshark, tmp_path):
    assert _routing_evidence(analyze(REDIRECT)) == [LinkEvidence.INFERRED]
    capture = _with_dsb(tshark, REDIRECT, REDIRECT_KEYS, tmp_path / "with_keys.pcapng")
    a = analyze(capture)
    assert _routing_evidence(a) == [LinkEvidence.ROUTING_TOKEN]
    assert all(c.login is not None and c.login.decrypted for c in a.connections)
    assert not a.problems


def test_key_log_files_and_secrets_blocks_merge(tshark, tmp_path):
    """One connection's secret in a file, the other's in the capture: both decrypt."""
    first, second = _key_lines(REDIRECT_KEYS)
    (tmp_path / "first.keys").write_text(first + "\n")
    (tmp_path / "second.keys").write_text(second + "\n")
    capture = _with_dsb(tshark, REDIRECT, tmp_path / "second.keys", tmp_path / "half.pcapng")
    a = analyze(capture, keylog=[tmp_path / "first.keys"])
    assert [c.decryption.undecrypted for c in a.connections] == [[], []]
    assert all(c.login.decrypted for c in a.connections)
    # The same through the command line, with the file given twice (repeatable, first wins).
    proc = run_cli(
        "analyze", str(capture), "--keylog", str(tmp_path / "first.keys"), "--keylog",
        str(tmp_path / "first.keys"), "--json", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "routed to wk1.tr123.eastus1-a.worker.database.windows.net:11042" in proc.stdout


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdslens.analyzer.cli", *args], capture_output=True, text=True
    )


def test_key_log_problems_name_the_file_and_line(tmp_path):
    keys = tmp_path / "bad.keys"
    good = _key_lines(REDIRECT_KEYS)
    keys.write_text("# comment\n" + good[0] + "\nCLIENT_RANDOM zz 00\n" + good[1] + "\n")
    a = analyze(REDIRECT, keylog=keys)
    assert [(p.path, p.frame) for p in a.problems] == [(str(keys), None)]
    assert a.problems[0].message.startswith("key log bad.keys, line 3: bad_random: ")
    assert _routing_evidence(a) == [LinkEvidence.ROUTING_TOKEN]  # the good lines are used
    proc = run_cli("analyze", str(REDIRECT), "--keylog", str(keys), "-q")
    assert f"{keys}: key log bad.keys, line 3: bad_random" in proc.stderr


def test_an_unreadable_key_log_exits_2(tmp_path):
    proc = run_cli("analyze", str(REDIRECT), "--keylog", str(tmp_path / "missing.keys"))
    assert proc.returncode == 2
    assert "missing.keys" in proc.stderr


# -- what could not be decrypted, and why: one entry per connection and reason ----------------


def _undecrypted(a: Analysis) -> list[list[tuple[str, int]]]:
    return [
        [(u.reason, u.records) for u in c.decryption.undecrypted] if c.decryption else []
        for c in a.connections
    ]


def test_without_a_key_log_there_is_no_decryption_record():
    a = analyze(REDIRECT)
    assert [c.decryption for c in a.connections] == [None, None]


def test_another_captures_key_log_says_no_key_per_connection():
    a = analyze(REDIRECT, keylog=SAMPLES / "redirect_ok__tedious.keys")
    assert _undecrypted(a) == [[("no_key", 4)], [("no_key", 6)]]
    for c in a.connections:
        assert c.decryption is not None and not c.decryption.keys_found
        (entry,) = c.decryption.undecrypted
        assert entry.frames == sorted(entry.frames) and len(entry.frames) == entry.records
        assert c.login is None  # nothing decrypted, nothing claimed
    assert _routing_evidence(a) == [LinkEvidence.INFERRED]  # the analysis without keys stands


def test_an_empty_key_log_still_says_no_key(tmp_path):
    """Asking for decryption with a key log that holds nothing is not silent either."""
    keys = tmp_path / "empty.keys"
    keys.write_text("# SSLKEYLOGFILE of another program\n")
    a = analyze(REDIRECT, keylog=keys)
    assert _undecrypted(a) == [[("no_key", 4)], [("no_key", 6)]]
    assert not a.problems


def test_a_wrong_secret_fails_authentication(tmp_path):
    keys = tmp_path / "wrong.keys"
    lines = []
    for line in _key_lines(REDIRECT_KEYS):
        label, random, secret = line.split()
        lines.append(f"{label} {random} {secret[:-2]}{(int(secret[-2:], 16) ^ 1):02x}")
    keys.write_text("\n".join(lines) + "\n")
    a = analyze(REDIRECT, keylog=keys)
    for c in a.connections:
        assert c.decryption is not None and c.decryption.keys_found
        assert [u.reason for u in c.decryption.undecrypted] == ["authentication_failed"]
        assert c.decryption.records_decrypted == 0
    proc = run_cli("analyze", str(REDIRECT), "--keylog", str(keys))
    assert proc.stdout.count("! not decrypted, authentication_failed") == 2


def test_a_missing_key_names_the_connection_it_concerns(tmp_path):
    """The driver logged only the first connection's secret: the second says no_key."""
    keys = tmp_path / "half.keys"
    keys.write_text(_key_lines(REDIRECT_KEYS)[0] + "\n")
    a = analyze(REDIRECT, keylog=keys)
    done = [c for c in a.connections if c.decryption and not c.decryption.undecrypted]
    missing = [c for c in a.connections if c.decryption and c.decryption.undecrypted]
    assert len(done) == 1 and len(missing) == 1
    assert done[0].login is not None and done[0].login.decrypted
    assert [u.reason for u in missing[0].decryption.undecrypted] == ["no_key"]


def test_a_failed_record_is_reported_where_the_server_failed_too():
    """tsql's TLS 1.3 LOGIN7 record failed the lab server's own MAC check (bad record mac in the
    expected file): the handshake decrypts, that one record does not, and the report says so."""
    e = json.loads((SAMPLES / "login_failed_tls__tsql.json").read_text())
    assert "bad record mac" in str(e["connections"][0]["error"])
    a = analyze(SAMPLES / e["capture"], keylog=_keys(e))
    (c,) = a.connections
    assert c.decryption is not None and c.decryption.records_decrypted > 0
    (entry,) = c.decryption.undecrypted
    assert entry.reason == "authentication_failed" and entry.records == 1


# -- the password stays in the capture with decryption on -------------------------------------


def _spy_plaintexts(monkeypatch) -> list[bytes]:
    """Collect what the decryptor hands the pipeline (test-side only)."""
    import tdslens.analyzer.phases as phases

    seen: list[bytes] = []

    class Spy(phases.TlsDecryptor):
        def feed(self, *args, **kwargs):
            results = super().feed(*args, **kwargs)
            seen.extend(r.data for r in results if isinstance(r, phases.DecryptedData))
            return results

    monkeypatch.setattr(phases, "TlsDecryptor", Spy)
    return seen


ENCRYPTED_LOGIN_SAMPLES = [
    e
    for e in KEYED
    if e["scenario"]
    in ("login_failed_tls", "redirect_ok", "strict_redirect", "redirect_login_only")
]


@pytest.mark.parametrize("e", ENCRYPTED_LOGIN_SAMPLES, ids=_id)
def test_no_output_holds_the_decrypted_password(e, monkeypatch, tmp_path, capsys, caplog):
    from test_password_never_leaks import leaf_values, password_of

    from tdslens.analyzer.cli import main

    plaintexts = _spy_plaintexts(monkeypatch)
    caplog.set_level(logging.DEBUG)
    capture, keys = SAMPLES / e["capture"], _keys(e)
    analysis = analyze(capture, keylog=keys)
    login7s = [p for p in plaintexts if p[:1] == b"\x10"]  # TDS packet type LOGIN7
    if not login7s:
        pytest.skip("the driver's LOGIN7 did not decrypt (see the undecrypted reasons)")
    password, obfuscated = password_of(login7s[0])
    assert len(password) >= 6, "a short password could match by accident"
    assert any(
        c.login and c.login.decrypted and c.login.password_present for c in analysis.connections
    )

    for value in leaf_values(analysis):
        if isinstance(value, str):
            assert password not in value
        elif isinstance(value, bytes | bytearray | memoryview):
            assert obfuscated not in bytes(value)
    assert password not in repr(analysis)

    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    main(
        [
            "analyze",
            str(capture),
            "--keylog",
            str(keys),
            "--json",
            str(out_json),
            "-o",
            str(out_html),
        ]
    )
    printed = capsys.readouterr()
    for text in (out_json.read_text(), out_html.read_text(), printed.out, printed.err, caplog.text):
        assert password not in text
        assert obfuscated.hex() not in text


def test_a_lost_client_hello_says_handshake_missing(tshark, tmp_path):
    """Without the ClientHello the session's secrets cannot be looked up, whatever the key log
    holds: that connection says handshake_missing, the other still decrypts."""
    editcap = str(Path(tshark).with_name("editcap"))
    hello = subprocess.run(
        [tshark, "-r", str(REDIRECT), "-Y", "tls.handshake.type == 1", "-T", "fields",
         "-e", "frame.number"],
        capture_output=True, text=True, check=True,
    ).stdout.split()[0]  # fmt: skip
    cut = tmp_path / "no_client_hello.pcap"
    subprocess.run([editcap, str(REDIRECT), str(cut), hello], check=True, capture_output=True)
    a = analyze(cut, keylog=REDIRECT_KEYS)
    reasons = [[u.reason for u in c.decryption.undecrypted] for c in a.connections]
    assert reasons == [["handshake_missing"], []]
    assert a.connections[0].login is None and a.connections[1].login.decrypted


# -- the record hook itself -------------------------------------------------------------------


def test_the_tls_record_hook_sees_every_record_in_order():
    """Every content type reaches the hook with its header fields and frames, before the
    dissector's own events; without a hook the dissector works as before."""
    from tdslens.dissectors.session import TdsDirection

    records = [(22, b"\x01\x00\x00\x00"), (20, b"\x01"), (21, b"\x02\x28"), (23, b"secret")]
    wire = b"".join(bytes([t]) + b"\x03\x03" + len(f).to_bytes(2, "big") + f for t, f in records)
    seen: list[tuple] = []
    hooked = TdsDirection(from_client=True, on_tls_record=lambda *r: seen.append(r))
    plain = TdsDirection(from_client=True)
    events = hooked.feed(wire, 7)
    assert [(s[1], s[3]) for s in seen] == records
    assert all(s[0] is True and s[2] == 0x0303 and s[4] == (7,) for s in seen)
    assert [type(e) for e in events] == [type(e) for e in plain.feed(wire, 7)]


def test_tls13_certificate_is_read_from_the_decrypted_handshake():
    """TLS 1.3 hides the server certificate; with the key log it is shown as TLS 1.2 shows it."""
    capture = SAMPLES / "strict_redirect__tedious.pcap"
    assert all(c.tls.certificate_subject is None for c in analyze(capture).connections)
    a = analyze(capture, keylog=SAMPLES / "strict_redirect__tedious.keys")
    for c in a.connections:
        assert c.tls.version == "TLS 1.3"
        assert c.tls.certificate_subject == "CN=tdslens-lab.database.windows.net"
        assert c.tls.sni in c.tls.certificate_san
