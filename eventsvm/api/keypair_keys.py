"""The keys behind nova's keypairs: the fingerprints nova shows, and the key pairs it generates
when no public key is given (ssh: RSA 2048 as OpenSSH; x509: a self-signed certificate).

A generated private key is answered once by the create and never recorded: only the public key
and its fingerprint become an event (DESIGN §2; docs/decisions.md, "Multi-create, ... adminPass").
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import struct

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from eventsvm.api.errors import BadRequest

_SSH_KEY_TYPES = frozenset({"ssh-rsa", "ssh-dss", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                            "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
                            "sk-ecdsa-sha2-nistp256@openssh.com"})
# nova's generated keys: RSA of 2048 bits, certificates valid for ten years
_KEY_BITS = 2048
_CERT_DAYS = 3650


def _invalid() -> BadRequest:
    return BadRequest("Keypair data is invalid: failed to generate fingerprint")


def _colon_hex(digest: str) -> str:
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def fingerprint(key_type: str, public_key: str) -> str:
    """The fingerprint nova shows for a key of `key_type`; BadRequest when the key is not one."""
    return x509_fingerprint(public_key) if key_type == "x509" else ssh_fingerprint(public_key)


def ssh_fingerprint(public_key: str) -> str:
    """The MD5 colon-hex fingerprint of an OpenSSH public key."""
    parts = public_key.strip().split()
    if len(parts) < 2 or parts[0] not in _SSH_KEY_TYPES:
        raise _invalid()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise _invalid() from None
    # the blob starts with its own key type, length-prefixed; a mismatch means a corrupt key
    if len(blob) < 4:
        raise _invalid()
    (length,) = struct.unpack(">I", blob[:4])
    if blob[4 : 4 + length].decode("ascii", "replace") != parts[0]:
        raise _invalid()
    return _colon_hex(hashlib.md5(blob, usedforsecurity=False).hexdigest())


def x509_fingerprint(certificate_pem: str) -> str:
    """The SHA-1 colon-hex fingerprint of a PEM certificate, as nova's generate_x509_fingerprint."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    except ValueError:
        raise _invalid() from None
    return _colon_hex(certificate.fingerprint(hashes.SHA1()).hex())


def generate(key_type: str, user_id: str, project_id: str) -> tuple[str, str]:
    """A new key pair as (public key, private key PEM): an OpenSSH public key, or for x509 a
    self-signed certificate naming the user and project."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()).decode()
    if key_type != "x509":
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
        return f"{public} Generated-by-Nova", private_pem
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{project_id}-{user_id}"[:64])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=_CERT_DAYS))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), private_pem
