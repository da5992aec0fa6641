"""
The Registry's TLS identity: the operator's certificate and key (PEM
files), or a self-signed certificate the Registry makes for itself at its
first start and reuses afterwards; and the trust a client puts in it.

The self-signed certificate is its own CA (``CA:TRUE``): clients trust
exactly it by passing the certificate file as their CA file.  It names
127.0.0.1, localhost, the address the Registry listens on and any
``--tls-name``; its key is written with mode 0600.  Built with
``cryptography``'s x509 builder (ECDSA P-256, SHA-256).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evnet.registry.credentials import write_private_file
from evnet.tls import TlsError

CERT_FILE = "registry-cert.pem"
KEY_FILE = "registry-key.pem"
VALID_DAYS = 3650
ALWAYS_NAMED = ("127.0.0.1", "localhost")
_INTERFACE = re.compile(r"(?:^|:)interface=((?:\\.|[^:\\])*)")


@dataclass(frozen=True)
class Identity:
    """A certificate and its key, ready to serve."""

    cert_path: str
    key_path: str
    fingerprint: str  # SHA-256 of the certificate, as AA:BB:…
    names: tuple[str, ...]  # its subject alternative names
    created: bool  # made just now (self-signed)
    self_signed: bool

    def server_options(self):
        """The Twisted TLS options that serve this certificate (and the chain after it in its file)."""
        from twisted.internet import ssl

        try:
            with open(self.cert_path, "rb") as f:
                chain = x509.load_pem_x509_certificates(f.read())
            with open(self.key_path, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), password=None)
            options = ssl.CertificateOptions(privateKey=key, certificate=chain[0], extraCertChain=chain[1:])
            options.getContext()  # checks that the key is the certificate's
        except ssl.SSL.Error:
            raise TlsError(f"cannot serve {self.cert_path} with the key {self.key_path}: "
                           "the key does not belong to the certificate") from None
        except (OSError, ValueError, TypeError) as e:
            why = getattr(e, "strerror", None) or str(e)
            raise TlsError(f"cannot serve {self.cert_path} with the key {self.key_path}: {why}") from None
        return options


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def interface_of(endpoint: str) -> Optional[str]:
    """The C{interface=} of a TCP server endpoint string, or None (every interface)."""
    found = _INTERFACE.search(endpoint)
    if found is None:
        return None
    value = re.sub(r"\\(.)", r"\1", found.group(1))
    return None if value in ("", "0.0.0.0", "::") else value


def names_for(interface: Optional[str], extra: list[str]) -> list[str]:
    """What a self-signed certificate names: 127.0.0.1, localhost, the interface, the C{--tls-name}s."""
    names: list[str] = []
    for name in [*ALWAYS_NAMED, *([interface] if interface else []), *extra]:
        if name and name not in names:
            names.append(name)
    return names


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _names_in(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(str(n.value) for n in san)


def make_self_signed(names: list[str], now: Optional[datetime.datetime] = None) -> tuple[bytes, bytes]:
    """A new key and self-signed CA certificate naming C{names}: (certificate PEM, key PEM)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evnet"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"EV_Registry {names[0]}"),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _read_cert(path: str, option: str) -> x509.Certificate:
    try:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificates(f.read())[0]
    except OSError as e:
        raise TlsError(f"{option} {path}: cannot read it: {e.strerror or e}") from None
    except ValueError:
        raise TlsError(f"{option} {path}: not a PEM certificate") from None


def operator_identity(cert_path: str, key_path: str) -> Identity:
    """The operator's certificate and key files (checked: readable, a pair)."""
    cert = _read_cert(cert_path, "--tls-cert")
    identity = Identity(cert_path, key_path, fingerprint(cert), _names_in(cert), created=False,
                        self_signed=cert.issuer == cert.subject)
    identity.server_options()  # fails now, in one line, if the key is not this certificate's
    return identity


def self_signed_identity(state_dir: str, names: list[str]) -> Identity:
    """
    The self-signed certificate in C{state_dir} (created if missing, mode
    0700), made with its 0600 key if it is not there yet.
    """
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
    except OSError as e:
        raise TlsError(f"cannot use --state-dir {state_dir}: {e.strerror or e}") from None
    cert_path = os.path.join(state_dir, CERT_FILE)
    key_path = os.path.join(state_dir, KEY_FILE)
    have_cert, have_key = os.path.exists(cert_path), os.path.exists(key_path)
    created = False
    if have_cert != have_key:
        present, missing = (cert_path, key_path) if have_cert else (key_path, cert_path)
        raise TlsError(f"{present} is there but {missing} is not: restore it, or remove both to make a new "
                       "certificate (clients must then trust the new one)")
    if not have_cert:
        cert_pem, key_pem = make_self_signed(names)
        try:
            write_private_file(key_path, key_pem, 0o600)
            write_private_file(cert_path, cert_pem, 0o644)
        except OSError as e:
            raise TlsError(f"cannot write the certificate in --state-dir {state_dir}: {e.strerror or e}") from None
        created = True
    cert = _read_cert(cert_path, "certificate")
    identity = Identity(cert_path, key_path, fingerprint(cert), _names_in(cert), created, self_signed=True)
    identity.server_options()
    return identity
