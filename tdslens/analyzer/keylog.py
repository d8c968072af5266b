"""NSS key log files (``SSLKEYLOGFILE``): the secrets that let us read encrypted TDS logins.

Azure SQL encrypts every login, so the routing target, the LOGIN7 fields and login errors are
only visible with the session secrets. Clients (and the lab's server) can write them in the NSS
key log format, one secret a line::

    # comment
    CLIENT_RANDOM <client random, 64 hex> <TLS 1.2 master secret, 96 hex>
    CLIENT_HANDSHAKE_TRAFFIC_SECRET <client random> <TLS 1.3 secret>
    SERVER_HANDSHAKE_TRAFFIC_SECRET / CLIENT_TRAFFIC_SECRET_0 / SERVER_TRAFFIC_SECRET_0 / ...

pcapng files can carry the same text in a Decryption Secrets Block of type ``TLSK``.

Parsing never raises on bad content: each line that cannot be used becomes a ``KeyLogProblem``
with its line number (and never the secret itself), and the good lines are kept. The result is
a plain ``KeyLog`` keyed by client random, which the sans-IO ``TlsDecryptor`` queries through
``KeyLog.secret(client_random, label)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

DSB_TLS_KEY_LOG = 0x544C534B  # pcapng Decryption Secrets Block type "TLSK" (NSS key log text)


class SecretLabel(StrEnum):
    """Labels of the NSS key log format that name a secret for one client random."""

    CLIENT_RANDOM = "CLIENT_RANDOM"  # TLS <= 1.2 master secret (48 bytes)
    CLIENT_EARLY_TRAFFIC_SECRET = "CLIENT_EARLY_TRAFFIC_SECRET"
    CLIENT_HANDSHAKE_TRAFFIC_SECRET = "CLIENT_HANDSHAKE_TRAFFIC_SECRET"
    SERVER_HANDSHAKE_TRAFFIC_SECRET = "SERVER_HANDSHAKE_TRAFFIC_SECRET"
    CLIENT_TRAFFIC_SECRET_0 = "CLIENT_TRAFFIC_SECRET_0"
    SERVER_TRAFFIC_SECRET_0 = "SERVER_TRAFFIC_SECRET_0"
    EXPORTER_SECRET = "EXPORTER_SECRET"
    EARLY_EXPORTER_SECRET = "EARLY_EXPORTER_SECRET"


class KeyLogIssue(StrEnum):
    """Why a key log line was not used. Values are stable API."""

    WRONG_FIELD_COUNT = "wrong_field_count"  # not "LABEL random secret"
    UNKNOWN_LABEL = "unknown_label"  # e.g. RSA / PMS_CLIENT_RANDOM lines (not supported)
    BAD_RANDOM = "bad_random"  # the client random is not 32 bytes of hex
    BAD_SECRET = "bad_secret"  # the secret is not hex, or has an impossible length
    CONFLICT = "conflict"  # a second, different secret for the same random and label
    NOT_TEXT = "not_text"  # bytes that are not ASCII
    UNSUPPORTED_BLOCK = "unsupported_block"  # a pcapng secrets block of another type


@dataclass(frozen=True, slots=True)
class KeyLogProblem:
    """One line we skipped. ``detail`` never contains secret material."""

    line: int  # 1-based; 0 for a problem with the whole input
    issue: KeyLogIssue
    detail: str
    source: str = ""  # file name or "pcapng DSB #n", when known


_HEX = re.compile(r"[0-9a-fA-F]+")
_MASTER_SECRET_LEN = 48
_TLS13_SECRET_LENS = frozenset({32, 48, 64})  # SHA-256, SHA-384 (and SHA-512, for safety)


@dataclass(frozen=True, slots=True)
class KeyLog:
    """Secrets by client random, then by label. Empty is valid (nothing can be decrypted)."""

    secrets: Mapping[bytes, Mapping[str, bytes]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    problems: tuple[KeyLogProblem, ...] = ()

    def secret(self, client_random: bytes, label: str) -> bytes | None:
        """The secret logged for this session and label, or None (the decryptor's lookup)."""
        by_label = self.secrets.get(bytes(client_random))
        return None if by_label is None else by_label.get(str(label))

    def __len__(self) -> int:
        """Number of sessions (client randoms) with at least one secret."""
        return len(self.secrets)

    def __contains__(self, client_random: object) -> bool:
        return isinstance(client_random, bytes | bytearray) and bytes(client_random) in self.secrets

    def merged(self, other: KeyLog) -> KeyLog:
        """Both logs in one (a capture may come with several files); the first one wins."""
        out: dict[bytes, dict[str, bytes]] = {r: dict(s) for r, s in self.secrets.items()}
        for random, labels in other.secrets.items():
            mine = out.setdefault(random, {})
            for label, value in labels.items():
                mine.setdefault(label, value)
        return KeyLog(_freeze(out), self.problems + other.problems)


def parse_keylog(text: str | bytes, source: str = "") -> KeyLog:
    """Parse NSS key log text; bad lines become problems, never exceptions."""
    if isinstance(text, bytes | bytearray | memoryview):
        text = bytes(text).decode("utf-8", errors="replace")
    secrets: dict[bytes, dict[str, bytes]] = {}
    problems: list[KeyLogProblem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip().rstrip("\x00")
        if not line or line.startswith("#"):
            continue
        problem = _add_line(line, secrets)
        if problem is not None:
            issue, detail = problem
            problems.append(KeyLogProblem(number, issue, detail, source))
    return KeyLog(_freeze(secrets), tuple(problems))


def keylog_from_dsb(secrets_type: int, payload: bytes, source: str = "") -> KeyLog:
    """A pcapng Decryption Secrets Block's payload (only ``TLSK`` blocks hold a key log)."""
    if secrets_type != DSB_TLS_KEY_LOG:
        issue = KeyLogIssue.UNSUPPORTED_BLOCK
        return KeyLog(
            problems=(KeyLogProblem(0, issue, f"secrets type 0x{secrets_type:08x}", source),)
        )
    return parse_keylog(bytes(payload), source)


def keylog_from_blocks(blocks: Iterable[tuple[int, bytes]]) -> KeyLog:
    """All (secrets type, payload) blocks of a capture merged into one key log."""
    log = KeyLog()
    for n, (stype, payload) in enumerate(blocks, start=1):
        log = log.merged(keylog_from_dsb(stype, payload, f"pcapng DSB #{n}"))
    return log


def read_keylog(path: str | Path) -> KeyLog:
    """Read a key log file. An unreadable file is the caller's error (it raises OSError)."""
    p = Path(path)
    return parse_keylog(p.read_bytes(), p.name)


def _add_line(line: str, secrets: dict[bytes, dict[str, bytes]]) -> tuple[KeyLogIssue, str] | None:
    """Store one line's secret; return (issue, detail) when it cannot be used."""
    if not line.isascii():
        return KeyLogIssue.NOT_TEXT, "the line has non-ASCII characters"
    fields = line.split()
    if len(fields) != 3:
        return KeyLogIssue.WRONG_FIELD_COUNT, f"{len(fields)} fields, expected 3"
    label, random_hex, secret_hex = fields
    if label not in SecretLabel.__members__:
        return KeyLogIssue.UNKNOWN_LABEL, f"label {label[:40]!r} is not supported"
    if len(random_hex) != 64 or not _HEX.fullmatch(random_hex):
        return KeyLogIssue.BAD_RANDOM, f"{label}: client random is not 64 hex digits"
    if len(secret_hex) % 2 or not _HEX.fullmatch(secret_hex):
        return KeyLogIssue.BAD_SECRET, f"{label}: secret is not hex"
    secret = bytes.fromhex(secret_hex)
    if label == SecretLabel.CLIENT_RANDOM and len(secret) != _MASTER_SECRET_LEN:
        return KeyLogIssue.BAD_SECRET, f"{label}: master secret of {len(secret)} bytes, not 48"
    if label != SecretLabel.CLIENT_RANDOM and len(secret) not in _TLS13_SECRET_LENS:
        return KeyLogIssue.BAD_SECRET, f"{label}: secret of {len(secret)} bytes"
    by_label = secrets.setdefault(bytes.fromhex(random_hex), {})
    known = by_label.setdefault(label, secret)
    if known != secret:
        return (
            KeyLogIssue.CONFLICT,
            f"{label}: another secret for this client random (kept the first)",
        )
    return None


def _freeze(secrets: dict[bytes, dict[str, bytes]]) -> Mapping[bytes, Mapping[str, bytes]]:
    return MappingProxyType({r: MappingProxyType(dict(s)) for r, s in secrets.items()})
