"""
TLS for evnet's clients: the trust a client puts in a server's certificate
(a CA file the operator gives with ``--ca-file``), and the one-line error
when it cannot be used.  Servers use Twisted's own ``ssl:`` endpoint strings.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization


class TlsError(Exception):
    """A certificate, key or CA file cannot be used; the text says what to do."""


def trust_root(ca_file: str):
    """A Twisted trust root of the certificates in C{ca_file} (PEM), for clients."""
    from twisted.internet import ssl

    try:
        with open(ca_file, "rb") as f:
            certs = x509.load_pem_x509_certificates(f.read())
    except OSError as e:
        raise TlsError(f"--ca-file {ca_file}: cannot read it: {e.strerror or e}") from None
    except ValueError:
        raise TlsError(f"--ca-file {ca_file}: not a PEM certificate file") from None
    return ssl.trustRootFromCertificates(
        [ssl.Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM)) for c in certs]
    )
