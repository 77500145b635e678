"""`tdwii pki`: a small PKI for DICOM TLS nodes."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="A small PKI: root CA, node certificates, Java PKCS#12 stores, CRL.", no_args_is_help=True
)


@app.command()
def init() -> None:
    """Create the root CA and the worklistmanager and workitemcreator nodes."""
