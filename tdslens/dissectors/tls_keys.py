"""Cipher suites and key derivation for TLS decryption (RFC 5246 5/6.3, RFC 8446 7.1-7.3).

Kept apart from the record logic in ``tls_decrypt.py`` so the table of suites and the key
schedule can be read (and checked against the RFCs) on their own. All cryptography comes from
the ``cryptography`` package; the TLS 1.2 PRF is RFC 5246's P_hash built on its HMAC.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand


class Cipher(Enum):
    """The bulk encryption of a suite, as far as decryption cares."""

    AES_GCM = "aes-gcm"
    AES_CCM = "aes-ccm"
    CHACHA20_POLY1305 = "chacha20-poly1305"
    AES_CBC = "aes-cbc"


class KeyExchange(Enum):
    """Only matters to explain a missing key: RSA sessions need the server's private key."""

    ECDHE = "ecdhe"
    DHE = "dhe"
    RSA = "rsa"
    TLS13 = "tls13"  # TLS 1.3 suites do not name one


@dataclass(frozen=True, slots=True)
class Suite:
    """What decryption needs to know about a cipher suite."""

    code: int
    name: str
    kx: KeyExchange
    cipher: Cipher
    key_len: int
    hash_name: str  # "sha256" / "sha384": TLS 1.2 PRF and TLS 1.3 HKDF hash (not TLS 1.0/1.1)
    mac_name: str | None = None  # CBC only: "sha1" / "sha256" / "sha384"

    @property
    def aead(self) -> bool:
        return self.cipher is not Cipher.AES_CBC

    @property
    def tls13(self) -> bool:
        return self.kx is KeyExchange.TLS13


_E, _D, _R = KeyExchange.ECDHE, KeyExchange.DHE, KeyExchange.RSA
_GCM, _CBC, _CHA = Cipher.AES_GCM, Cipher.AES_CBC, Cipher.CHACHA20_POLY1305

# IANA TLS cipher suite registry codes. TLS 1.3 first, then TLS 1.2 AEAD, then the CBC suites
# SQL Server (Schannel) still negotiates with older clients.
SUITES: dict[int, Suite] = {
    s.code: s
    for s in (
        Suite(0x1301, "TLS_AES_128_GCM_SHA256", KeyExchange.TLS13, _GCM, 16, "sha256"),
        Suite(0x1302, "TLS_AES_256_GCM_SHA384", KeyExchange.TLS13, _GCM, 32, "sha384"),
        Suite(0x1303, "TLS_CHACHA20_POLY1305_SHA256", KeyExchange.TLS13, _CHA, 32, "sha256"),
        Suite(0x1304, "TLS_AES_128_CCM_SHA256", KeyExchange.TLS13, Cipher.AES_CCM, 16, "sha256"),
        Suite(0xC02B, "ECDHE-ECDSA-AES128-GCM-SHA256", _E, _GCM, 16, "sha256"),
        Suite(0xC02C, "ECDHE-ECDSA-AES256-GCM-SHA384", _E, _GCM, 32, "sha384"),
        Suite(0xC02F, "ECDHE-RSA-AES128-GCM-SHA256", _E, _GCM, 16, "sha256"),
        Suite(0xC030, "ECDHE-RSA-AES256-GCM-SHA384", _E, _GCM, 32, "sha384"),
        Suite(0x009E, "DHE-RSA-AES128-GCM-SHA256", _D, _GCM, 16, "sha256"),
        Suite(0x009F, "DHE-RSA-AES256-GCM-SHA384", _D, _GCM, 32, "sha384"),
        Suite(0x009C, "AES128-GCM-SHA256", _R, _GCM, 16, "sha256"),
        Suite(0x009D, "AES256-GCM-SHA384", _R, _GCM, 32, "sha384"),
        Suite(0xCCA8, "ECDHE-RSA-CHACHA20-POLY1305", _E, _CHA, 32, "sha256"),
        Suite(0xCCA9, "ECDHE-ECDSA-CHACHA20-POLY1305", _E, _CHA, 32, "sha256"),
        Suite(0xCCAA, "DHE-RSA-CHACHA20-POLY1305", _D, _CHA, 32, "sha256"),
        Suite(0xC009, "ECDHE-ECDSA-AES128-SHA", _E, _CBC, 16, "sha256", "sha1"),
        Suite(0xC00A, "ECDHE-ECDSA-AES256-SHA", _E, _CBC, 32, "sha256", "sha1"),
        Suite(0xC013, "ECDHE-RSA-AES128-SHA", _E, _CBC, 16, "sha256", "sha1"),
        Suite(0xC014, "ECDHE-RSA-AES256-SHA", _E, _CBC, 32, "sha256", "sha1"),
        Suite(0xC023, "ECDHE-ECDSA-AES128-SHA256", _E, _CBC, 16, "sha256", "sha256"),
        Suite(0xC024, "ECDHE-ECDSA-AES256-SHA384", _E, _CBC, 32, "sha384", "sha384"),
        Suite(0xC027, "ECDHE-RSA-AES128-SHA256", _E, _CBC, 16, "sha256", "sha256"),
        Suite(0xC028, "ECDHE-RSA-AES256-SHA384", _E, _CBC, 32, "sha384", "sha384"),
        Suite(0x0033, "DHE-RSA-AES128-SHA", _D, _CBC, 16, "sha256", "sha1"),
        Suite(0x0039, "DHE-RSA-AES256-SHA", _D, _CBC, 32, "sha256", "sha1"),
        Suite(0x0067, "DHE-RSA-AES128-SHA256", _D, _CBC, 16, "sha256", "sha256"),
        Suite(0x006B, "DHE-RSA-AES256-SHA256", _D, _CBC, 32, "sha256", "sha256"),
        Suite(0x002F, "AES128-SHA", _R, _CBC, 16, "sha256", "sha1"),
        Suite(0x0035, "AES256-SHA", _R, _CBC, 32, "sha256", "sha1"),
        Suite(0x003C, "AES128-SHA256", _R, _CBC, 16, "sha256", "sha256"),
        Suite(0x003D, "AES256-SHA256", _R, _CBC, 32, "sha256", "sha256"),
    )
}
# Suites we recognise only to say "RSA key exchange" when a key is missing.
RSA_KX_CODES = frozenset({0x000A, 0x0005, 0x0004, 0x009C, 0x009D, 0x002F, 0x0035, 0x003C, 0x003D})

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "md5": hashes.MD5,
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
}
MAC_LEN = {"sha1": 20, "sha256": 32, "sha384": 48}
AEAD_TAG_LEN = 16
AES_BLOCK = 16


def hmac_digest(hash_name: str, key: bytes, data: bytes) -> bytes:
    h = hmac.HMAC(key, HASHES[hash_name]())
    h.update(data)
    return h.finalize()


def prf_tls12(hash_name: str, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """RFC 5246 5: PRF(secret, label, seed) = P_hash(secret, label + seed)."""
    return _p_hash(hash_name, secret, label + seed, length)


def prf_tls10(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """RFC 2246 5 / RFC 4346 5 (TLS 1.0, 1.1): P_MD5 on one half of the secret xor P_SHA1."""
    half = (len(secret) + 1) // 2
    md5 = _p_hash("md5", secret[:half], label + seed, length)
    sha1 = _p_hash("sha1", secret[len(secret) - half :], label + seed, length)
    return bytes(a ^ b for a, b in zip(md5, sha1, strict=True))


def _p_hash(hash_name: str, secret: bytes, seed: bytes, length: int) -> bytes:
    out = b""
    a = seed
    while len(out) < length:
        a = hmac_digest(hash_name, secret, a)
        out += hmac_digest(hash_name, secret, a + seed)
    return out[:length]


def hkdf_expand_label(hash_name: str, secret: bytes, label: str, length: int) -> bytes:
    """RFC 8446 7.1: HKDF-Expand-Label with an empty context (all that traffic keys need)."""
    full = b"tls13 " + label.encode("ascii")
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    return HKDFExpand(HASHES[hash_name](), length, info).derive(secret)


@dataclass(frozen=True, slots=True)
class TrafficKeys:
    """Keys of one direction: the AEAD or CBC key, the IV (or fixed IV part) and the MAC key."""

    key: bytes
    iv: bytes
    mac_key: bytes = b""


def tls12_keys(
    suite: Suite, master: bytes, client_random: bytes, server_random: bytes, version: int = 0x0303
) -> tuple[TrafficKeys, TrafficKeys]:
    """RFC 5246 6.3 key block -> (client keys, server keys); TLS 1.0/1.1 use their own PRF."""
    mac_len = MAC_LEN[suite.mac_name] if suite.mac_name else 0
    if suite.cipher is Cipher.AES_CBC:
        iv_len = AES_BLOCK  # TLS 1.0's first IV; unused from TLS 1.1 on (explicit IV)
    elif suite.cipher is Cipher.CHACHA20_POLY1305:
        iv_len = 12  # RFC 7905: the whole nonce base
    else:
        iv_len = 4  # RFC 5288: the implicit (salt) part of the GCM nonce
    total = 2 * (mac_len + suite.key_len + iv_len)
    seed = server_random + client_random
    if version < 0x0303:
        block = prf_tls10(master, b"key expansion", seed, total)
    else:
        block = prf_tls12(suite.hash_name, master, b"key expansion", seed, total)
    parts = []
    p = 0
    for n in (mac_len, mac_len, suite.key_len, suite.key_len, iv_len, iv_len):
        parts.append(block[p : p + n])
        p += n
    cmac, smac, ckey, skey, civ, siv = parts
    return TrafficKeys(ckey, civ, cmac), TrafficKeys(skey, siv, smac)


def tls13_keys(suite: Suite, traffic_secret: bytes) -> TrafficKeys:
    """RFC 8446 7.3: key and IV of one traffic secret."""
    key = hkdf_expand_label(suite.hash_name, traffic_secret, "key", suite.key_len)
    iv = hkdf_expand_label(suite.hash_name, traffic_secret, "iv", 12)
    return TrafficKeys(key, iv)


def tls13_next_secret(suite: Suite, secret: bytes) -> bytes:
    """RFC 8446 7.2: the traffic secret after a KeyUpdate."""
    return hkdf_expand_label(suite.hash_name, secret, "traffic upd", len(secret))


def aead_for(suite: Suite, key: bytes) -> AESGCM | AESCCM | ChaCha20Poly1305:
    if suite.cipher is Cipher.AES_GCM:
        return AESGCM(key)
    if suite.cipher is Cipher.AES_CCM:
        return AESCCM(key, tag_length=AEAD_TAG_LEN)
    return ChaCha20Poly1305(key)
