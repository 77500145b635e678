"""Certificates and CRLs as rich tables, for `tdwii pki show` and the `-d` connection log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from tdwii_cli.clock import utc_now
from tdwii_cli.tls.certinfo import CertInfo, cert_info

if TYPE_CHECKING:
    from cryptography.x509 import Certificate, CertificateRevocationList


_STYLE = {"ok": "green", "expiring": "yellow", "expired": "bold red", "not yet valid": "bold red"}


def cert_table(
    cert_or_info: CertInfo | Certificate | bytes,
    title: str | None = None,
    *,
    extra_rows: Iterable[tuple[str, str]] = (),
    now: dt.datetime | None = None,
) -> Table:
    """A two-column rich Table of the certificate's facts (validity coloured by state).

    `extra_rows` are appended as (field, rich-markup value), e.g. a chain check result.
    """
    info = cert_or_info if isinstance(cert_or_info, CertInfo) else cert_info(cert_or_info)
    now = now or utc_now()
    state = info.validity(now)
    left = info.days_left(now)
    table = Table(title=title, show_header=False, title_justify="left", expand=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")

    kind = "CA" if info.is_ca else "end entity"
    if info.self_signed:
        kind += ", self-signed"
    table.add_row("Subject", escape(info.subject) + f"  [dim]({kind})[/]")
    table.add_row("Issuer", escape(info.issuer))
    table.add_row("SANs", escape(", ".join(info.sans)) if info.sans else "[dim]none[/]")
    table.add_row("Key", escape(info.key_description))
    fmt = "%Y-%m-%d %H:%M:%S UTC"
    if state == "ok":
        note = f"{left} days left"
    elif state == "expiring":
        note = f"only {left} days left"
    elif state == "expired":
        note = f"EXPIRED {-left} days ago"
    else:
        note = "NOT YET VALID"
    table.add_row(
        "Validity",
        f"{info.not_before.strftime(fmt)} → {info.not_after.strftime(fmt)}  "
        f"[{_STYLE[state]}]{note}[/]",
    )
    table.add_row("Serial", info.serial_hex)
    table.add_row("SHA-256", info.sha256)
    table.add_row("EKU", ", ".join(info.eku) if info.eku else "[dim]none[/]")
    table.add_row("Signature", info.signature_hash.upper() or "[dim]n/a[/]")
    for name, value in extra_rows:
        table.add_row(name, value)
    return table


def crl_table(crl: CertificateRevocationList, title: str) -> Table:
    """A two-column rich Table of a CRL: issuer, number, dates and the revoked serials."""
    from cryptography import x509

    table = Table(title=escape(title), show_header=False, title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("Issuer", escape(crl.issuer.rfc4514_string()))
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        table.add_row("CRL number", str(number))
    except x509.ExtensionNotFound:
        pass
    fmt = "%Y-%m-%d %H:%M:%S UTC"
    table.add_row("Last update", crl.last_update_utc.strftime(fmt))
    if crl.next_update_utc is not None:
        table.add_row("Next update", crl.next_update_utc.strftime(fmt))
    serials = [f"{r.serial_number:X}" for r in crl]
    table.add_row("Revoked", "\n".join(serials) if serials else "[dim]none[/]")
    return table
