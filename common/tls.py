"""The TLS context of a client of the broker, built one way for the agent and the cloud."""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["client_tls_context"]


def client_tls_context(
    *, ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """Trust ``ca_file`` (else the system's CAs) and present the client certificate if set."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context
