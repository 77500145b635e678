"""`tdwii pki`: a small PKI for DICOM TLS nodes (thin layer over `tdwii_cli.pki`).

cryptography is imported inside the commands only, so `tdwii --help` stays light.
(No `from __future__ import annotations` here: typer reads these annotations at runtime.)
"""

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from tdwii_cli.cli.console import stdout_console
from tdwii_cli.cli.options.log import LogOptions, log_options
from tdwii_cli.errors import TdwiiError

if TYPE_CHECKING:
    from tdwii_cli.pki.authority import PkiResult
    from tdwii_cli.pki.keys import KeySpec

app = typer.Typer(
    help="A small PKI: root CA, node certificates, Java PKCS#12 stores, CRL.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

DEFAULT_DIR = Path("certs")
KEY_PANEL = "Keys and certificates"

DirOpt = Annotated[
    Path,
    typer.Option(
        "--dir", metavar="DIR", help="The PKI folder (holds rootCA/, servers/, clients/)."
    ),
]
KeyTypeOpt = Annotated[
    Literal["ec", "rsa"],
    typer.Option(
        "--key-type",
        case_sensitive=False,
        help="EC P-256 (default) or RSA (some Java peers need RSA).",
        rich_help_panel=KEY_PANEL,
    ),
]
RsaBitsOpt = Annotated[
    int | None,
    typer.Option(
        "--rsa-bits",
        metavar="BITS",
        help="RSA key size: 2048 (default), 3072 or 4096; less than 2048 is refused.",
        rich_help_panel=KEY_PANEL,
    ),
]
DaysOpt = Annotated[
    int,
    typer.Option("--days", min=1, help="Validity of node certificates.", rich_help_panel=KEY_PANEL),
]
OrgOpt = Annotated[
    str, typer.Option("--org", help="Organization (O) in every subject.", rich_help_panel=KEY_PANEL)
]
SanOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--san",
        metavar="NAME",
        help="Extra host name or IP for node certificates (repeatable); localhost, 127.0.0.1, "
        "::1 and this host's name are always included.",
        rich_help_panel=KEY_PANEL,
    ),
]
CaPasswordOpt = Annotated[
    Path | None,
    typer.Option(
        "--ca-password-file",
        metavar="FILE",
        help="File whose first line is the CA key's password.",
    ),
]
P12PasswordOpt = Annotated[
    str,
    typer.Option(
        "--p12-password",
        metavar="PASSWORD",
        help="Password of the PKCS#12 stores (dcm4che's default is 'secret').",
        show_default=True,
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace existing files (otherwise nothing is touched).")
]
AE_PANEL = "Authorization (tdwii serve --authorize)"
AeConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--ae-config",
        metavar="FILE",
        help="The AE configuration of tdwii serve (ApplicationEntities.json).",
        rich_help_panel=AE_PANEL,
    ),
]


def _key_spec(key_type: str, rsa_bits: int | None) -> "KeySpec":
    from tdwii_cli.pki.keys import KeySpec

    if key_type.lower() == "ec":
        if rsa_bits is not None:
            raise TdwiiError("--rsa-bits needs --key-type rsa", hint="add --key-type rsa")
        return KeySpec("ec")
    bits = 2048 if rsa_bits is None else rsa_bits
    if bits > 8192:
        raise TdwiiError(
            f"RSA keys of {bits} bits are not supported", hint="use 2048, 3072 or 4096"
        )
    return KeySpec("rsa", bits)


def _issuing(
    key_type: str,
    rsa_bits: int | None,
    days: int,
    org: str,
    san: list[str] | None,
    ca_password_file: Path | None,
    p12_password: str,
    force: bool,
) -> dict[str, Any]:
    """The keyword arguments `init_pki` and `issue_node` share, from their options."""
    return {
        "key_spec": _key_spec(key_type, rsa_bits),
        "days": days,
        "org": org,
        "sans": san or (),
        "ca_password": _ca_password(ca_password_file),
        "p12_password": p12_password,
        "force": force,
    }


def _ca_password(path: Path | None) -> bytes | None:
    if path is None:
        return None
    from tdwii_cli.fileio import read_password_file

    return read_password_file(path)


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _q(path: Path) -> str:
    return shlex.quote(_shown(path))


def _mode(path: Path) -> str:
    try:
        return oct(path.stat().st_mode & 0o777)[2:].rjust(4, "0")
    except OSError:
        return "?"


def _what(path: Path) -> str:
    name = path.name
    if name.endswith(".crl.pem"):
        return "CRL"
    if name.endswith(".revoked.json"):
        return "revoked serials"
    if name.endswith(".key"):
        return "private key" + (" (CA)" if path.parent.name == "rootCA" else "")
    if name.endswith(".p12"):
        return "Java trust store" if path.parent.name == "rootCA" else "Java key store"
    if name.endswith(".pem"):
        return "CA certificate" if path.parent.name == "rootCA" else "certificate"
    return ""


def _written_table(result: "PkiResult", title: str):  # type: ignore[no-untyped-def]
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("File")
    table.add_column("What")
    table.add_column("Mode", justify="right")
    for path in result.files:
        table.add_row(_shown(path), _what(path), _mode(path))
    return table


def next_steps(result: "PkiResult") -> list[tuple[str, str]]:
    """Ready-to-paste command lines (comment, command) for the PKI `result` describes; DCMTK's
    echoscu by its path (pynetdicom's script of that name may come first in PATH)."""
    from tdwii_cli.cli.dcmtk import TELL_APART, dcmtk_tool
    from tdwii_cli.pki.layout import DEFAULT_CLIENT, DEFAULT_SERVER, ca_paths

    ca = ca_paths(result.directory)
    server = result.nodes.get(DEFAULT_SERVER)
    client = result.nodes.get(DEFAULT_CLIENT)
    if server is None or client is None:
        return []
    default_layout = result.directory.resolve() == DEFAULT_DIR.resolve()
    server_opts = client_opts = ""
    if not default_layout:
        server_opts = f" --ca {_q(ca.cert)} --cert {_q(server.cert)} --key {_q(server.key)}"
        client_opts = f" --ca {_q(ca.cert)} --cert {_q(client.cert)} --key {_q(client.key)}"
    pw = "secret" if result.p12_password_is_default else '"$P12_PASSWORD"'
    rsa = result.key_spec.kind == "rsa"
    cipher = (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        if rsa
        else "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
    )
    echoscu_note = (
        "DCMTK client (its default profile speaks TLS 1.2 and 1.3 with RSA)"
        if rsa
        else "DCMTK client (TLS 1.3 with EC keys; add +pz for TLS 1.2)"
    )
    found = dcmtk_tool("echoscu")
    echoscu = _q(found) if found is not None else "echoscu"
    if found is None:  # pynetdicom's script of that name would fail on these options
        echoscu_note += f"; DCMTK is not installed here (apt install dcmtk): {TELL_APART}"
    return [
        ("tdwii server, mutual TLS on port 2762", f"tdwii serve --mtls{server_opts}"),
        ("tdwii client: C-ECHO over mutual TLS", f"tdwii echo --mtls{client_opts} localhost 2762"),
        (
            echoscu_note,
            f"{echoscu} +tls {_q(client.key)} {_q(client.cert)} +cf {_q(ca.cert)} localhost 2762",
        ),
        (
            "dcm4che client (Java, PKCS#12 stores): C-ECHO",
            f"storescu -c ANY-SCP@localhost:2762 --key-store {_q(client.p12)} "
            f"--key-store-pass {pw} --trust-store {_q(ca.p12)} --trust-store-pass {pw} "
            f"--tls-cipher {cipher} --tls12",
        ),
    ]


def _print_steps(steps: list[tuple[str, str]]) -> None:
    out = stdout_console()
    if not steps:
        return
    out.print()
    out.print("[bold]Next steps[/]")
    for note, command in steps:
        out.print(f"  [dim]# {note}[/]")
        out.print(f"  {command}", markup=False, soft_wrap=True)


@app.command()
@log_options
def init(
    directory: DirOpt = DEFAULT_DIR,
    key_type: KeyTypeOpt = "ec",
    rsa_bits: RsaBitsOpt = None,
    days: DaysOpt = 398,
    ca_days: Annotated[
        int,
        typer.Option(
            "--ca-days", min=1, help="Validity of the root CA.", rich_help_panel=KEY_PANEL
        ),
    ] = 3650,
    org: OrgOpt = "tdwii",
    san: SanOpt = None,
    ca_password_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-password-file",
            metavar="FILE",
            help="Encrypt the CA key with the password on this file's first line.",
        ),
    ] = None,
    p12_password: P12PasswordOpt = "secret",
    force: ForceOpt = False,
    *,
    log: LogOptions,
) -> None:
    """Create the root CA and the worklistmanager (server) and workitemcreator (client) nodes.

    Writes DIR/rootCA/rootCA.{pem,key,p12,crl.pem},
    DIR/servers/worklistmanager/worklistmanager.{pem,key,p12} and
    DIR/clients/workitemcreator/workitemcreator.{pem,key,p12}.
    Refuses to touch an existing PKI unless --force.
    """
    from tdwii_cli.pki.authority import init_pki

    result = init_pki(
        directory,
        ca_days=ca_days,
        **_issuing(key_type, rsa_bits, days, org, san, ca_password_file, p12_password, force),
    )
    stdout_console().print(
        _written_table(result, f"PKI written in {_shown(directory)} ({result.key_spec.describe()})")
    )
    _print_steps(next_steps(result))


@app.command()
@log_options
def issue(
    kind: Annotated[
        Literal["server", "client"],
        typer.Argument(help="server or client", show_default=False),
    ],
    name: Annotated[str, typer.Argument(help="Node name: the certificate's CN and folder name.")],
    directory: DirOpt = DEFAULT_DIR,
    key_type: KeyTypeOpt = "ec",
    rsa_bits: RsaBitsOpt = None,
    days: DaysOpt = 398,
    org: OrgOpt = "tdwii",
    san: SanOpt = None,
    ca_password_file: CaPasswordOpt = None,
    p12_password: P12PasswordOpt = "secret",
    force: ForceOpt = False,
    ae_title: Annotated[
        str | None,
        typer.Option(
            "--ae-title",
            metavar="TITLE",
            help="Bind the certificate (CN=NAME) to this AE title in --ae-config.",
            rich_help_panel=AE_PANEL,
        ),
    ] = None,
    roles: Annotated[
        str | None,
        typer.Option(
            "--roles",
            metavar="ROLES",
            help="The AE title's roles, comma-separated: create, perform, cancel, watch, "
            "query, admin (they replace the entry's roles).",
            rich_help_panel=AE_PANEL,
        ),
    ] = None,
    ae_config: AeConfigOpt = None,
    ae_address: Annotated[
        str | None,
        typer.Option(
            "--ae-address",
            metavar="HOST:PORT",
            help="Where the AE receives event reports (over mutual TLS), if it does.",
            rich_help_panel=AE_PANEL,
        ),
    ] = None,
    *,
    log: LogOptions,
) -> None:
    """Add a node signed by the existing CA: DIR/servers/NAME/ or DIR/clients/NAME/.

    With --ae-config, --ae-title and --roles, the same step binds the new certificate
    (CN=NAME) to the AE title with those roles in tdwii serve's AE configuration (the entry
    is made or updated; the rest of the file stays), so certificate and authorization
    never drift. A running tdwii serve rereads the file within a second.
    """
    from tdwii_cli.pki.authority import issue_node

    binding = _binding(name, ae_title, roles, ae_config, ae_address)
    result = issue_node(
        directory,
        kind,
        name,
        **_issuing(key_type, rsa_bits, days, org, san, ca_password_file, p12_password, force),
    )
    stdout_console().print(_written_table(result, f"{kind} {name} ({result.key_spec.describe()})"))
    if binding is not None:
        _bind(binding)


@app.command()
@log_options
def show(
    files: Annotated[
        list[Path], typer.Argument(metavar="FILE", help="Certificates (PEM or DER), or CRLs.")
    ],
    ca: Annotated[
        list[Path] | None,
        typer.Option(
            "--ca", "-ca", metavar="FILE", help="Also check the chain against this CA (repeatable)."
        ),
    ] = None,
    crl: Annotated[
        Path | None, typer.Option("--crl", metavar="FILE", help="Also check for revocation.")
    ] = None,
    ae_config: Annotated[
        Path | None,
        typer.Option(
            "--ae-config",
            metavar="FILE",
            help="Also say which entries of tdwii serve's AE configuration the certificate "
            "matches (AE titles, the identities that match, roles).",
        ),
    ] = None,
    *,
    log: LogOptions,
) -> None:
    """Show certificates: subject, issuer, SANs, key, validity, serial, fingerprint, EKU.

    Exits 1 when a file is not a certificate, a certificate has expired (or is not
    yet valid), its key is too weak, or (with --ca) its chain does not verify.
    """
    from rich.markup import escape

    from tdwii_cli.cli.certtable import cert_table, crl_table
    from tdwii_cli.pki.certs import key_problem, load_certs, verify_chain
    from tdwii_cli.pki.crl import load_crl
    from tdwii_cli.tls.certinfo import cert_info

    loaded: list[tuple[Path, list[Any], Any]] = []
    for path in files:
        try:
            loaded.append((path, load_certs(path), None))
        except TdwiiError:
            if not path.is_file() or b"X509 CRL" not in path.read_bytes()[:4096]:
                raise
            loaded.append((path, [], load_crl(path)))
    ca_certs = [c for p in (ca or []) for c in load_certs(p)]
    revoked = None
    if crl is not None:
        revoked = {r.serial_number for r in load_crl(crl)}
    policy = None
    if ae_config is not None:
        from tdwii_cli.access.aefile import load
        from tdwii_cli.access.policy import AccessPolicy

        policy = AccessPolicy(load(ae_config))

    out = stdout_console()
    problems: list[str] = []
    for path, certs, crl_obj in loaded:
        if crl_obj is not None:
            out.print(crl_table(crl_obj, _shown(path)))
            continue
        for index, cert in enumerate(certs):
            info = cert_info(cert)
            label = _shown(path) + (f" [{index + 1}/{len(certs)}]" if len(certs) > 1 else "")
            extra: list[tuple[str, str]] = []
            state = info.validity()
            if state == "expired":
                problems.append(f"{label} expired on {info.not_after:%Y-%m-%d}")
            elif state == "not yet valid":
                problems.append(f"{label} is not valid before {info.not_before:%Y-%m-%d}")
            elif state == "expiring":
                log_warn = f"{label} expires in {info.days_left()} days"
                _warn(log_warn)
            weak = key_problem(cert)
            if weak:
                extra.append(("Strength", f"[bold red]too weak: {escape(weak)}[/]"))
                problems.append(f"{label}: {weak}")
            if ca_certs:
                reason = verify_chain(cert, ca_certs, intermediates=certs[index + 1 :])
                if reason is None:
                    extra.append(("Chain", "[green]verifies against the given CA[/]"))
                else:
                    extra.append(("Chain", f"[bold red]does not verify: {escape(reason)}[/]"))
                    problems.append(f"{label}: chain does not verify ({reason})")
            if revoked is not None:
                if cert.serial_number in revoked:
                    extra.append(("Revocation", "[bold red]REVOKED[/]"))
                    problems.append(f"{label} is revoked")
                else:
                    extra.append(("Revocation", "[green]not in the CRL[/]"))
            if policy is not None:
                extra.append(("AE config", _matching_entries(policy, info)))
            out.print(cert_table(info, escape(label), extra_rows=extra))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise TdwiiError(problems[0] + more)


def _binding(
    name: str,
    ae_title: str | None,
    roles: str | None,
    ae_config: Path | None,
    ae_address: str | None,
) -> dict[str, Any] | None:
    """The AE configuration change `issue` is asked for, checked before anything is written
    (None when it is asked for none)."""
    if ae_config is None:
        if ae_title is not None or roles is not None or ae_address is not None:
            raise TdwiiError(
                "--ae-title, --roles and --ae-address need --ae-config",
                hint="add --ae-config ApplicationEntities.json (the file tdwii serve reads)",
            )
        return None
    if ae_title is None:
        raise TdwiiError("--ae-config needs --ae-title", hint="e.g. --ae-title TDD1")
    from tdwii_cli.access import aefile
    from tdwii_cli.access.roles import RoleError, parse_roles
    from tdwii_cli.dicom.values import ae_title_problem

    problem = ae_title_problem(ae_title)
    if problem is not None:
        raise TdwiiError(f"--ae-title {ae_title!r}: {problem}")
    try:
        role_set = parse_roles([roles or ""])
    except RoleError as exc:
        raise TdwiiError(f"--roles: {exc}") from None
    address = port = None
    if ae_address is not None:
        host, _, port_text = ae_address.rpartition(":")
        if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise TdwiiError(f"--ae-address {ae_address!r} is not HOST:PORT")
        address, port = host.strip("[]"), int(port_text)
    if ae_config.exists():
        aefile.load(ae_config)  # a broken file is reported before a certificate is made
    return {
        "path": ae_config,
        "ae_title": ae_title,
        "identity": f"CN={name}",
        "roles": role_set,
        "address": address,
        "port": port,
        "mtls": True if address is not None else None,
    }


def _bind(binding: dict[str, Any]) -> None:
    from tdwii_cli.access import aefile

    path = binding.pop("path")
    update = aefile.update_entry(path, **binding)
    entry = update.entry
    done = "added to" if update.created else "updated in"
    if update.file_created:
        done = "written to a new"
    stdout_console().print(
        f"{entry.ae_title} {done} {_shown(path)}: certificates {', '.join(entry.identities)}; "
        f"roles {entry.roles_words}"
        + (f"; event reports to {entry.address}:{entry.port} (mTLS)" if entry.reachable else ""),
        markup=False,
        soft_wrap=True,
    )
    if not entry.roles:
        _warn(f"{entry.ae_title} has no roles: with --authorize it may only C-ECHO")


def _matching_entries(policy: Any, info: Any) -> str:
    """The AE configuration entries a certificate matches, as rich markup for `show`."""
    from rich.markup import escape

    from tdwii_cli.access.identity import certificate_as_peer

    peer = certificate_as_peer(info.subject_cn, info.sans, info.sha256)
    found = policy.entries_for(peer)
    if not found:
        return "[yellow]matches no entry: with --authorize it may call as no AE title[/]"
    return "\n".join(
        f"{escape(entry.ae_title)}: roles {escape(entry.roles_words)} (by {escape(', '.join(ids))})"
        for entry, ids in found
    )


def _warn(message: str) -> None:
    import logging

    logging.getLogger("tdwii.pki").warning("%s", message)


@app.command()
@log_options
def revoke(
    name: Annotated[str, typer.Argument(help="Node name (or servers/NAME, clients/NAME).")],
    directory: DirOpt = DEFAULT_DIR,
    ca_password_file: CaPasswordOpt = None,
    *,
    log: LogOptions,
) -> None:
    """Revoke a node's certificate and reissue DIR/rootCA/rootCA.crl.pem."""
    from tdwii_cli.pki.authority import revoke as do_revoke
    from tdwii_cli.pki.crl import load_crl
    from tdwii_cli.pki.layout import ca_paths

    result = do_revoke(directory, name, _ca_password(ca_password_file))
    crl = load_crl(ca_paths(directory).crl)
    stdout_console().print(
        f"revoked {name} (serial {result.revoked_serial:X}); "
        f"{_shown(ca_paths(directory).crl)} lists {len(list(crl))} revoked certificate(s)",
        markup=False,
        soft_wrap=True,
    )
    stdout_console().print(
        _CRL_USE.format(crl=_shown(ca_paths(directory).crl)), soft_wrap=True, markup=False
    )


_CRL_USE = (
    "a `tdwii serve --mtls` using this CA rereads {crl} within a second, running or not; "
    "other servers need the file (DCMTK: +crl, dcm4che: its trust store's CRL)"
)


@app.command("crl")
@log_options
def crl_command(
    directory: DirOpt = DEFAULT_DIR,
    ca_password_file: CaPasswordOpt = None,
    *,
    log: LogOptions,
) -> None:
    """Reissue DIR/rootCA/rootCA.crl.pem (fresh dates) from the revoked serials."""
    from tdwii_cli.cli.certtable import crl_table
    from tdwii_cli.pki.authority import write_crl
    from tdwii_cli.pki.crl import load_crl
    from tdwii_cli.pki.layout import ca_paths

    write_crl(directory, _ca_password(ca_password_file))
    path = ca_paths(directory).crl
    stdout_console().print(crl_table(load_crl(path), _shown(path)))
    stdout_console().print(_CRL_USE.format(crl=_shown(path)), soft_wrap=True, markup=False)
