"""A self-signed certificate for the simulated servers, made locally with ``cryptography``.

The drivers are told to trust the server certificate (TrustServerCertificate, no host check),
so one certificate whose names cover every simulated host is enough.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NAMES = ["*.database.windows.net", "*.worker.database.windows.net", "localhost"]


def make_cert(folder: Path, extra_names: list[str] | None = None) -> tuple[Path, Path]:
    """Write cert.pem/key.pem into ``folder`` (reused when already there); return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    names = NAMES + (extra_names or [])
    names_path = folder / "names.txt"
    if (
        cert_path.exists()
        and key_path.exists()
        and names_path.exists()
        and names_path.read_text().split() == names
    ):
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tdslens-lab.database.windows.net")])
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    names_path.write_text("\n".join(names) + "\n")
    return cert_path, key_path
