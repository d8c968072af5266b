"""The LOGIN7 password never leaves the capture: not in JSON, HTML, terminal text, logs or repr.

For every sample whose LOGIN7 travels in clear (tshark finds a TDS type 0x10 packet), the test
decodes the password itself (MS-TDS 2.2.6.4 obfuscation, test-side only) and then searches every
output tdslens produces for it, in clear and obfuscated.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SAMPLES

from tdslens.analyzer.analysis import analyze
from tdslens.analyzer.cli import main

CLEARTEXT_LOGIN_SAMPLES = sorted(SAMPLES.glob("login_failed_cleartext__*.pcap")) + sorted(
    SAMPLES.glob("encryption_mismatch__*.pcap")
)


def login7_payload(tshark: str, path: Path) -> bytes | None:
    out = subprocess.run(
        [tshark, "-r", str(path), "-Y", "tds.type == 16", "-T", "fields", "-e", "tcp.payload"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return bytes.fromhex(out[0]) if out else None


def password_of(login7: bytes) -> tuple[str, bytes]:
    """(password, its obfuscated bytes) from a LOGIN7 packet (8-byte TDS header first)."""
    body = login7[8:]
    offset = int.from_bytes(body[44:46], "little")
    chars = int.from_bytes(body[46:48], "little")
    obfuscated = body[offset : offset + 2 * chars]
    plain = bytes((((b ^ 0xA5) << 4) & 0xF0) | (((b ^ 0xA5) >> 4) & 0x0F) for b in obfuscated)
    return plain.decode("utf-16-le"), obfuscated


def leaf_values(obj: object) -> Iterator[object]:
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from leaf_values(getattr(obj, f.name))
    elif isinstance(obj, list | tuple | set | frozenset):
        for v in obj:
            yield from leaf_values(v)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaf_values(k)
            yield from leaf_values(v)
    else:
        yield obj


def test_there_are_cleartext_logins_to_check():
    assert len(CLEARTEXT_LOGIN_SAMPLES) >= 5


@pytest.mark.parametrize("path", CLEARTEXT_LOGIN_SAMPLES, ids=lambda p: p.stem)
def test_no_output_holds_the_password(path, tshark, tmp_path, capsys, caplog):
    login7 = login7_payload(tshark, path)
    if login7 is None:
        pytest.skip("tshark finds no cleartext LOGIN7 in this capture")
    password, obfuscated = password_of(login7)
    assert len(password) >= 6, "a short password could match by accident: pick another sample"

    caplog.set_level(logging.DEBUG)
    analysis = analyze(path)
    login = next(c.login for c in analysis.connections if c.login is not None)
    assert login.password_present  # we did see it, and say only that

    for value in leaf_values(analysis):
        if isinstance(value, str):
            assert password not in value
        elif isinstance(value, bytes | bytearray | memoryview):
            assert obfuscated not in bytes(value)
    assert password not in repr(analysis)

    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    main(["analyze", str(path), "--json", str(out_json), "-o", str(out_html)])
    printed = capsys.readouterr()
    for text in (out_json.read_text(), out_html.read_text(), printed.out, printed.err, caplog.text):
        assert password not in text
        assert obfuscated.hex() not in text
