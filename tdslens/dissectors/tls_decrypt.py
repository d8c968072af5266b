"""Decrypt one connection's TLS records with logged session secrets (sans-IO).

Azure SQL wraps the LOGIN7, the routing ENVCHANGE and login errors in TLS. With an NSS key log
(see ``tdslens.analyzer.keylog``) we can read them back:

    dec = TlsDecryptor(keylog)                       # anything with .secret(random, label)
    for from_client, ctype, version, fragment, frames in records_in_wire_order:
        for result in dec.feed(from_client, ctype, version, fragment, frames):
            ...  # DecryptedData / DecryptedHandshake / DecryptedAlert / CannotDecrypt

The decryptor is fed the TLS records of *both* directions in the order they crossed the wire
(the caller unwraps TDS PRELOGIN packets first). It reads just enough of the cleartext
ClientHello / ServerHello (randoms, version, suite, encrypt_then_mac) to find the secrets, then:

- TLS 1.2 (RFC 5246): master secret (``CLIENT_RANDOM`` line) -> PRF key block; each side
  switches to its keys at its ChangeCipherSpec. AES-GCM, ChaCha20-Poly1305 and AES-CBC with
  HMAC-SHA1/256/384 (explicit IV, MAC-then-encrypt or RFC 7366 encrypt-then-MAC).
- TLS 1.0 / 1.1 (RFC 2246 / 4346), still met on old SQL Servers: AES-CBC with HMAC-SHA1, the
  MD5+SHA1 PRF; TLS 1.0 chains each record's IV from the previous record's last block.
- TLS 1.3 (RFC 8446): handshake traffic secrets from the ServerHello on, application traffic
  secrets after each side's Finished (and KeyUpdate). AES-GCM, AES-CCM, ChaCha20-Poly1305.

Nothing here raises on bad input: every record that cannot be read yields a ``CannotDecrypt``
with a ``DecryptFailure`` reason. Plaintext is never put in a ``repr`` (it holds LOGIN7s).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher as _Cipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes

from .tls_keys import (
    AEAD_TAG_LEN,
    AES_BLOCK,
    MAC_LEN,
    RSA_KX_CODES,
    SUITES,
    Cipher,
    KeyExchange,
    Suite,
    TrafficKeys,
    aead_for,
    hmac_digest,
    tls12_keys,
    tls13_keys,
    tls13_next_secret,
)

CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA = 20, 21, 22, 23
CLIENT_HELLO, SERVER_HELLO, FINISHED, KEY_UPDATE = 1, 2, 20, 24
TLS1_0, TLS1_1, TLS1_2, TLS1_3 = 0x0301, 0x0302, 0x0303, 0x0304
EXT_ENCRYPT_THEN_MAC, EXT_SUPPORTED_VERSIONS = 22, 43
# RFC 8446 4.1.3: a ServerHello with this random is a HelloRetryRequest (no keys yet).
HELLO_RETRY_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)
SEQ_WINDOW = 4  # records we may have missed (capture loss) before a record; tried on failure
SEQ_WINDOW_AFTER_GAP = 64  # the same after the caller told us of a gap
MAX_FAILURES = 8  # consecutive failures after which a side stops trying (wrong key)
HANDSHAKE_CAP = 1 << 18  # bytes of one handshake message we buffer (certificate chains fit)


class SecretSource(Protocol):
    """Where secrets come from: ``tdslens.analyzer.keylog.KeyLog`` is one."""

    def secret(self, client_random: bytes, label: str) -> bytes | None: ...


class DecryptFailure(StrEnum):
    """Why a record could not be decrypted. Values are stable API."""

    NO_KEY = "no_key"  # the key log has no (or not this) secret for the session
    UNSUPPORTED_SUITE = "unsupported_suite"  # a cipher suite we do not implement
    UNSUPPORTED_VERSION = "unsupported_version"  # SSL 3.0 (and anything unknown)
    HANDSHAKE_MISSING = "handshake_missing"  # capture started late: no ClientHello/ServerHello
    RSA_KEY_EXCHANGE = "rsa_key_exchange"  # RSA key transport and no secret: needs the RSA key
    AUTHENTICATION_FAILED = "authentication_failed"  # tag / MAC / padding check: wrong key
    MALFORMED = "malformed"  # a record too short for its cipher, a bad inner plaintext


@dataclass(frozen=True, slots=True, kw_only=True)
class DecryptResult:
    """Base of every result: which side sent the record(s) and their frames."""

    from_client: bool
    frames: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DecryptedData(DecryptResult):
    """The plaintext of one application-data record (feed it to the TDS dissector)."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class DecryptedHandshake(DecryptResult):
    """A handshake message that travelled encrypted (TLS 1.3 flight, TLS 1.2 Finished)."""

    msg_type: int
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class DecryptedAlert(DecryptResult):
    level: int
    description: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CannotDecrypt(DecryptResult):
    """One record left encrypted, and why."""

    reason: DecryptFailure
    detail: str
    content_type: int
    length: int


@dataclass(slots=True)
class _CipherState:
    """Keys of one direction plus its record sequence number."""

    suite: Suite
    keys: TrafficKeys
    aead: object | None
    seq: int = 0
    secret: bytes | None = None  # TLS 1.3 traffic secret, for KeyUpdate
    chained_iv: bytes | None = None  # TLS 1.0 CBC: the last ciphertext block of the previous record


@dataclass(slots=True)
class _Side:
    """One direction's decryption state."""

    current: _CipherState | None = None
    pending: _CipherState | None = None  # TLS 1.2: from CCS on; TLS 1.3: after Finished
    encrypting: bool = False  # TLS 1.2: after CCS; TLS 1.3: after the ServerHello
    missing: tuple[DecryptFailure, str] | None = None  # why there is no key
    failures: int = 0
    after_gap: bool = False
    hs: bytearray = field(default_factory=bytearray)  # decrypted handshake bytes
    hs_frames: list[int] = field(default_factory=list)
    plain: bytearray = field(default_factory=bytearray)  # cleartext handshake bytes

    def reset_keys(self) -> None:
        """A (new) ServerHello: forget the keys and the encrypted state of a previous one."""
        self.current = self.pending = self.missing = None
        self.encrypting = self.after_gap = False
        self.failures = 0
        self.hs.clear()
        self.hs_frames.clear()


class TlsDecryptor:
    """One TLS session (one TCP connection): records of both directions in, plaintext out."""

    def __init__(self, secrets: SecretSource) -> None:
        self.secrets = secrets
        self.client_random: bytes | None = None
        self.server_random: bytes | None = None
        self.version: int | None = None  # negotiated (supported_versions for TLS 1.3)
        self.suite_code: int | None = None
        self.suite: Suite | None = None
        self.keys_found = False  # some secret for this session was in the key log
        self._client_etm = False
        self._etm = False  # RFC 7366 encrypt_then_mac negotiated (CBC only)
        self._hrr = False  # a TLS 1.3 HelloRetryRequest was seen: CCS records are no-ops
        self._sides = {True: _Side(), False: _Side()}

    # -- public API -------------------------------------------------------------------------

    def feed(
        self,
        from_client: bool,
        content_type: int,
        version: int,
        fragment: bytes,
        frames: tuple[int, ...] = (),
    ) -> list[DecryptResult]:
        """One TLS record (header fields + fragment). Never raises on bad input."""
        try:
            return self._record(from_client, content_type, version, bytes(fragment), frames)
        except Exception as exc:  # a bug of ours must not stop the analysis of a capture
            return [
                CannotDecrypt(
                    from_client=from_client, frames=tuple(frames), content_type=content_type,
                    length=len(fragment), reason=DecryptFailure.MALFORMED,
                    detail=f"unexpected {type(exc).__name__} while decrypting",
                )
            ]  # fmt: skip

    def gap(self, from_client: bool) -> None:
        """The capture lost bytes of this direction: records (and sequence numbers) may be gone."""
        self._sides[from_client].after_gap = True

    @property
    def suite_name(self) -> str | None:
        return self.suite.name if self.suite else None

    # -- records ----------------------------------------------------------------------------

    def _record(self, from_client, ctype, version, fragment, frames) -> list[DecryptResult]:
        side = self._sides[from_client]
        tls13 = self.version == TLS1_3
        if ctype == CHANGE_CIPHER_SPEC:
            if not tls13 and not self._hrr:  # TLS 1.3 CCS is a no-op for middleboxes
                side.encrypting = True
                if side.pending is not None:
                    side.current, side.pending = side.pending, None
            return []
        encrypted = side.encrypting and (not tls13 or ctype == APPLICATION_DATA)
        if ctype == HANDSHAKE and not encrypted:
            return self._cleartext_handshake(from_client, fragment)
        if ctype == ALERT and not encrypted:
            return []  # a cleartext alert: the TLS dissector reports it
        if ctype != APPLICATION_DATA and not encrypted:
            return []
        return self._decrypt(from_client, side, ctype, version, fragment, tuple(frames))

    def _decrypt(self, from_client, side, ctype, version, fragment, frames):
        def cannot(reason: DecryptFailure, detail: str) -> list[DecryptResult]:
            return [
                CannotDecrypt(
                    from_client=from_client, frames=frames, content_type=ctype,
                    length=len(fragment), reason=reason, detail=detail,
                )
            ]  # fmt: skip

        if self.client_random is None or self.version is None:
            if self.client_random is None:
                detail = "no ClientHello before encrypted data (the capture started late?)"
            else:  # a lost ServerHello, or TLS 1.3 0-RTT early data (not decrypted)
                detail = "no ServerHello before encrypted data (lost, or 0-RTT early data)"
            return cannot(DecryptFailure.HANDSHAKE_MISSING, detail)
        if side.current is None and side.pending is None:
            reason, detail = side.missing or (DecryptFailure.NO_KEY, "no key for this session")
            return cannot(reason, detail)
        if side.failures >= MAX_FAILURES:
            return cannot(
                DecryptFailure.AUTHENTICATION_FAILED,
                f"gave up after {MAX_FAILURES} records failed to authenticate (wrong key?)",
            )
        window = SEQ_WINDOW_AFTER_GAP if side.after_gap else SEQ_WINDOW
        opened = None
        if side.current is not None:
            opened = self._open_window(side.current, ctype, version, fragment, window)
        if opened is None and side.pending is not None:
            # TLS 1.3 without handshake secrets, or a missed Finished / CCS: try the next keys.
            opened = self._open_window(side.pending, ctype, version, fragment, window)
            if opened is not None:
                side.current, side.pending = side.pending, None
        if self.version == TLS1_0 and side.current is not None:
            side.current.chained_iv = self._last_block(fragment)  # even when it failed
        if opened is None:
            side.failures += 1
            if len(fragment) < self._overhead():
                return cannot(DecryptFailure.MALFORMED, "record too short for its cipher")
            if side.current is None:
                reason, detail = side.missing or (DecryptFailure.NO_KEY, "no handshake secret")
                return cannot(reason, detail)
            return cannot(
                DecryptFailure.AUTHENTICATION_FAILED,
                "authentication failed: wrong key, or records missing from the capture",
            )
        side.failures = 0
        side.after_gap = False
        inner_type, plaintext = opened
        return self._plaintext(from_client, side, inner_type, plaintext, frames)

    def _plaintext(self, from_client, side, inner_type, plaintext, frames):
        if inner_type == APPLICATION_DATA:
            if not plaintext:
                return []
            return [DecryptedData(from_client=from_client, frames=frames, data=plaintext)]
        if inner_type == ALERT and len(plaintext) >= 2:
            return [
                DecryptedAlert(
                    from_client=from_client, frames=frames,
                    level=plaintext[0], description=plaintext[1],
                )
            ]  # fmt: skip
        if inner_type == HANDSHAKE:
            return self._encrypted_handshake(from_client, side, plaintext, frames)
        return [
            CannotDecrypt(
                from_client=from_client, frames=frames, content_type=inner_type,
                length=len(plaintext), reason=DecryptFailure.MALFORMED,
                detail=f"decrypted an unexpected content type {inner_type}",
            )
        ]  # fmt: skip

    def _encrypted_handshake(self, from_client, side, plaintext, frames):
        out: list[DecryptResult] = []
        hs = side.hs
        hs += plaintext
        side.hs_frames += [f for f in frames if f not in side.hs_frames]
        for msg_type, body in _handshake_messages(hs):
            out.append(
                DecryptedHandshake(
                    from_client=from_client, frames=tuple(side.hs_frames),
                    msg_type=msg_type, body=body,
                )
            )  # fmt: skip
            if self.version == TLS1_3:
                self._tls13_after(side, msg_type)
        if not hs:
            side.hs_frames.clear()
        return out

    def _tls13_after(self, side: _Side, msg_type: int) -> None:
        """TLS 1.3 key changes: Finished -> application keys; KeyUpdate -> next generation."""
        if msg_type == FINISHED:
            if side.pending is not None:
                side.current, side.pending = side.pending, None
            else:
                side.current = None
                side.missing = (DecryptFailure.NO_KEY, "no application traffic secret logged")
        elif msg_type == KEY_UPDATE and side.current and side.current.secret:
            state = side.current
            secret = tls13_next_secret(state.suite, state.secret)
            side.current = _tls13_state(state.suite, secret)

    # -- ciphers ----------------------------------------------------------------------------

    def _overhead(self) -> int:
        suite = self.suite
        if suite is None:
            return 0
        if suite.tls13:
            return AEAD_TAG_LEN + 1
        if suite.cipher is Cipher.AES_GCM:
            return 8 + AEAD_TAG_LEN
        if suite.cipher is Cipher.AES_CBC:
            return AES_BLOCK + AES_BLOCK
        return AEAD_TAG_LEN

    def _open_window(self, state, ctype, version, fragment, window):
        for seq in range(state.seq, state.seq + window + 1):
            opened = self._open(state, seq, ctype, version, fragment)
            if opened is not None:
                state.seq = seq + 1
                return opened
        return None

    def _open(self, state: _CipherState, seq, ctype, version, fragment):
        """(inner content type, plaintext) or None when the record does not authenticate."""
        suite, keys = state.suite, state.keys
        if suite.tls13:
            nonce = _xor_seq(keys.iv, seq)
            aad = bytes([ctype]) + version.to_bytes(2, "big") + len(fragment).to_bytes(2, "big")
            try:
                inner = state.aead.decrypt(nonce, fragment, aad)  # type: ignore[union-attr]
            except (InvalidTag, ValueError):
                return None
            stripped = inner.rstrip(b"\x00")  # RFC 8446 5.4: content, type, zero padding
            if not stripped:
                return None
            return stripped[-1], stripped[:-1]
        header = seq.to_bytes(8, "big") + bytes([ctype]) + version.to_bytes(2, "big")
        if suite.cipher is Cipher.AES_CBC:
            return self._open_cbc(state, header, ctype, fragment)
        if suite.cipher is Cipher.AES_GCM:  # RFC 5288: salt(4) + explicit nonce(8) in the record
            nonce, body = keys.iv + fragment[:8], fragment[8:]
        else:  # RFC 7905: ChaCha20 nonce is the IV xor the sequence number
            nonce, body = _xor_seq(keys.iv, seq), fragment
        if len(nonce) != 12 or len(body) < AEAD_TAG_LEN:
            return None
        aad = header + (len(body) - AEAD_TAG_LEN).to_bytes(2, "big")
        try:
            return ctype, state.aead.decrypt(nonce, body, aad)  # type: ignore[union-attr]
        except (InvalidTag, ValueError):
            return None

    def _last_block(self, fragment: bytes) -> bytes | None:
        """TLS 1.0: the next record's IV is this record's last ciphertext block."""
        suite = self.suite
        if suite is None or suite.cipher is not Cipher.AES_CBC:
            return None
        body = fragment[: -MAC_LEN[suite.mac_name or "sha1"]] if self._etm else fragment
        return body[-AES_BLOCK:] if len(body) >= AES_BLOCK else None

    def _open_cbc(self, state: _CipherState, header, ctype, fragment):
        """AES-CBC, MAC-then-encrypt or encrypt-then-MAC (RFC 7366). The IV is the first block
        of the record from TLS 1.1 on; TLS 1.0 chains it from the previous record."""
        suite, keys = state.suite, state.keys
        mac_len = MAC_LEN[suite.mac_name]
        if self.version == TLS1_0:
            iv = state.chained_iv if state.chained_iv is not None else keys.iv
        else:
            iv = None  # explicit: the first block of the record
        least = AES_BLOCK if iv is not None else 2 * AES_BLOCK
        if self._etm:  # RFC 7366: the MAC covers IV + ciphertext and follows them
            body, mac = fragment[:-mac_len], fragment[-mac_len:]
            if len(body) < least or len(body) % AES_BLOCK:
                return None
            data = header + len(body).to_bytes(2, "big") + body
            if hmac_digest(suite.mac_name, keys.mac_key, data) != mac:
                return None
            padded = _cbc_decrypt(keys.key, iv, body)
            content = _unpad(padded)
            return None if content is None else (ctype, content)
        if len(fragment) < least or len(fragment) % AES_BLOCK:
            return None
        padded = _cbc_decrypt(keys.key, iv, fragment)
        unpadded = _unpad(padded)
        if unpadded is None or len(unpadded) < mac_len:
            return None
        content, mac = unpadded[: len(unpadded) - mac_len], unpadded[len(unpadded) - mac_len :]
        data = header + len(content).to_bytes(2, "big") + content
        if hmac_digest(suite.mac_name, keys.mac_key, data) != mac:
            return None
        return ctype, content

    # -- cleartext handshake: just what the keys need ---------------------------------------

    def _cleartext_handshake(self, from_client: bool, fragment: bytes) -> list[DecryptResult]:
        hs = self._sides[from_client].plain
        hs += fragment
        for msg_type, body in _handshake_messages(hs):
            try:
                if msg_type == CLIENT_HELLO and from_client:
                    self._client_hello(body)
                elif msg_type == SERVER_HELLO and not from_client:
                    self._server_hello(body)
            except _Short:
                pass  # a damaged hello: the TLS dissector reports it; we just have no keys
        return []

    def _client_hello(self, body: bytes) -> None:
        r = _Reader(body)
        r.take(2)
        random = r.take(32)
        if random != self.client_random:  # a new session (not the ClientHello after an HRR)
            self.client_random = random
            self.server_random = self.version = self.suite = self.suite_code = None
        r.vec(1)
        r.vec(2)
        r.vec(1)
        self._client_etm = EXT_ENCRYPT_THEN_MAC in _extensions(r)

    def _server_hello(self, body: bytes) -> None:
        r = _Reader(body)
        legacy = int.from_bytes(r.take(2), "big")
        random = r.take(32)
        r.vec(1)
        suite_code = int.from_bytes(r.take(2), "big")
        r.take(1)
        exts = _extensions(r)
        if random == HELLO_RETRY_RANDOM:
            self._hrr = True
            return  # keys come with the second ServerHello
        version = legacy
        if EXT_SUPPORTED_VERSIONS in exts and len(exts[EXT_SUPPORTED_VERSIONS]) >= 2:
            version = int.from_bytes(exts[EXT_SUPPORTED_VERSIONS][:2], "big")
        self.server_random, self.version, self.suite_code = random, version, suite_code
        self._etm = self._client_etm and EXT_ENCRYPT_THEN_MAC in exts
        for side in self._sides.values():
            side.reset_keys()
        self._setup_keys()

    def _setup_keys(self) -> None:
        client, server = self._sides[True], self._sides[False]
        suite = SUITES.get(self.suite_code or -1)
        if self.client_random is None:
            missing = (DecryptFailure.HANDSHAKE_MISSING, "no ClientHello (capture started late?)")
            client.missing = server.missing = missing
            return
        if self.version not in (TLS1_0, TLS1_1, TLS1_2, TLS1_3):
            v = self.version or 0
            missing = (DecryptFailure.UNSUPPORTED_VERSION, f"TLS version 0x{v:04x}")
            client.missing = server.missing = missing
            return
        if (
            suite is None
            or suite.tls13 != (self.version == TLS1_3)
            or (self.version in (TLS1_0, TLS1_1) and suite.cipher is not Cipher.AES_CBC)
            or (self.version in (TLS1_0, TLS1_1) and suite.mac_name != "sha1")
        ):
            detail = f"cipher suite 0x{self.suite_code or 0:04x}"
            if self.suite_code in RSA_KX_CODES and not self._has(
                "CLIENT_RANDOM"
            ):  # an RSA suite we do not implement *and* no key: the key is the first problem
                client.missing = server.missing = (DecryptFailure.RSA_KEY_EXCHANGE, detail)
            else:
                client.missing = server.missing = (DecryptFailure.UNSUPPORTED_SUITE, detail)
            return
        self.suite = suite
        if suite.tls13:
            server.encrypting = client.encrypting = True
            for side, who in ((client, "CLIENT"), (server, "SERVER")):
                hs = self._lookup(f"{who}_HANDSHAKE_TRAFFIC_SECRET")
                app = self._lookup(f"{who}_TRAFFIC_SECRET_0")
                side.current = _tls13_state(suite, hs) if hs else None
                side.pending = _tls13_state(suite, app) if app else None
                if hs is None and app is None:
                    side.missing = (DecryptFailure.NO_KEY, f"no {who} traffic secrets logged")
                elif hs is None:
                    side.missing = (DecryptFailure.NO_KEY, f"no {who}_HANDSHAKE_TRAFFIC_SECRET")
            return
        master = self._lookup("CLIENT_RANDOM")
        if master is None:
            if suite.kx is KeyExchange.RSA:
                missing = (
                    DecryptFailure.RSA_KEY_EXCHANGE,
                    f"{suite.name} uses RSA key transport and no master secret was logged",
                )
            else:
                missing = (DecryptFailure.NO_KEY, "no CLIENT_RANDOM (master secret) logged")
            client.missing = server.missing = missing
            return
        ckeys, skeys = tls12_keys(
            suite, master, self.client_random, self.server_random or b"", self.version
        )
        client.pending = _tls12_state(suite, ckeys)
        server.pending = _tls12_state(suite, skeys)

    def _has(self, label: str) -> bool:
        return self._lookup(label) is not None

    def _lookup(self, label: str) -> bytes | None:
        if self.client_random is None:
            return None
        try:
            value = self.secrets.secret(self.client_random, label)
        except Exception:  # a broken secret source is treated as "no key"
            return None
        if value:
            self.keys_found = True
        return value or None


# ---------------------------------------------------------------------------------------------
# helpers


def _tls13_state(suite: Suite, secret: bytes) -> _CipherState:
    keys = tls13_keys(suite, secret)
    return _CipherState(suite, keys, aead_for(suite, keys.key), secret=secret)


def _tls12_state(suite: Suite, keys: TrafficKeys) -> _CipherState:
    aead = aead_for(suite, keys.key) if suite.aead else None
    return _CipherState(suite, keys, aead)


def _xor_seq(iv: bytes, seq: int) -> bytes:
    """RFC 8446 5.3 / RFC 7905: the per-record nonce is the IV xor the padded sequence number."""
    return (int.from_bytes(iv, "big") ^ seq).to_bytes(len(iv), "big")


def _cbc_decrypt(key: bytes, iv: bytes | None, body: bytes) -> bytes:
    """AES-CBC; with ``iv`` None the first block of ``body`` is the (explicit) IV."""
    if iv is None:
        iv, body = body[:AES_BLOCK], body[AES_BLOCK:]
    dec = _Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return dec.update(body) + dec.finalize()


def _unpad(padded: bytes) -> bytes | None:
    """RFC 5246 6.2.3.2: n+1 trailing bytes of value n; None when the padding is wrong."""
    if not padded:
        return None
    n = padded[-1]
    if n + 1 > len(padded) or any(b != n for b in padded[-(n + 1) :]):
        return None
    return padded[: -(n + 1)]


class _Short(Exception):
    """A hello shorter than its length fields say."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Short
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def vec(self, len_bytes: int) -> bytes:
        return self.take(int.from_bytes(self.take(len_bytes), "big"))

    def left(self) -> int:
        return len(self.data) - self.pos


def _extensions(r: _Reader) -> dict[int, bytes]:
    """Extension type -> data; an absent extension block is an empty dict."""
    out: dict[int, bytes] = {}
    if not r.left():
        return out
    exts = _Reader(r.vec(2))
    while exts.left():
        etype = int.from_bytes(exts.take(2), "big")
        out.setdefault(etype, exts.vec(2))
    return out


def _handshake_messages(buf: bytearray) -> Iterator[tuple[int, bytes]]:
    """Pop each complete handshake message (type, body) from the front of ``buf``, one at a time
    so the caller can switch keys between messages; an over-long message empties the buffer."""
    while len(buf) >= 4:
        length = int.from_bytes(buf[1:4], "big")
        if length > HANDSHAKE_CAP:
            buf.clear()
            return
        if len(buf) < 4 + length:
            return
        msg_type, body = buf[0], bytes(buf[4 : 4 + length])
        del buf[: 4 + length]
        yield msg_type, body
