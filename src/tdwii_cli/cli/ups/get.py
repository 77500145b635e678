"""`tdwii ups get`: one workitem (N-GET), as a tree or the DICOM JSON model."""

from tdwii_cli import exitcodes
from tdwii_cli.cli.options.association import scu_options
from tdwii_cli.cli.options.log import LogOptions, log_options
from tdwii_cli.cli.options.tls import tls_options
from tdwii_cli.cli.ups.common import Host, Json, Keys, Port, Uid, peer
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.options import TlsOptions


@log_options
@tls_options("client")
@scu_options
def get(
    host: Host,
    port: Port,
    uid: Uid,
    keys: Keys = None,
    json_out: Json = False,
    *,
    log: LogOptions,
    tls: TlsOptions,
    net: ScuOptions,
) -> None:
    """Show a workitem (N-GET): all its attributes, or those named with -k."""
    from tdwii_cli.client.statuses import judge
    from tdwii_cli.client.upsclient import connect
    from tdwii_cli.dicom.keys import parse_path
    from tdwii_cli.dicom.uids import UPS_PULL, UPS_WATCH
    from tdwii_cli.errors import TdwiiError

    wanted = []
    for key in keys or ():
        path = parse_path(key)
        if len(path) > 1 or "=" in key:
            raise TdwiiError(f"-k {key}: N-GET takes top-level attributes only", exitcodes.USAGE)
        wanted.append(path[0].tag)
    with connect(peer(host, port, tls, net), [UPS_PULL, UPS_WATCH], required=()) as client:
        rsp = client.get(uid, wanted)
    judge(f"N-GET {uid}", rsp.status, rsp.comment, operation="N-GET")
    try:
        ds = rsp.dataset()
    except Exception as exc:
        raise TdwiiError(f"N-GET {uid}: the answer is not a data set: {exc}") from None
    if ds is None:
        raise TdwiiError(f"N-GET {uid}: the answer has no attributes")
    from tdwii_cli.cli.ups import render

    if json_out:
        import json

        print(json.dumps(ds.to_json_dict(), indent=2))
    else:
        render.print_tree(ds, f"workitem {uid}")
