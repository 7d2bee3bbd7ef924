"""Readable differences between two snapshots.

A snapshot is flattened into one `path: value` line per setting, with objects
keyed by name (`virtual_services/horizon-443/port: 443`). Names cannot contain
'/', so every line says exactly what it belongs to and a unified diff of two
such listings is precise even without context lines.

Certificates appear by fingerprint and private keys by a digest of their
encrypted token: a diff is shown on pages and kept in the audit trail, so it
never prints key material, and PEM blocks would not be readable anyway.
"""
import difflib
import json

from .certificates import fingerprints, token_digest

IGNORED = ("version", "author", "published_at")  # differ on every publish, say nothing about behaviour


def flatten(snapshot: dict) -> list[str]:
    lines = []
    # An empty section says nothing a reader needs ("pools: []" vanishes once there is a pool).
    _walk({k: v for k, v in readable(snapshot).items() if k not in IGNORED and v not in ([], ())}, "", lines)
    return sorted(lines)


def readable(snapshot: dict) -> dict:
    """The snapshot with PEM texts as fingerprints and keys as token digests."""
    certificates = [_readable_certificate(cert) for cert in snapshot.get("certificates", [])]
    services = [_readable_tls(vs) for vs in snapshot.get("virtual_services", [])]
    return {**snapshot, "certificates": certificates, "virtual_services": services}


def _readable_certificate(cert: dict) -> dict:
    leaf, *chain = fingerprints(cert["cert_pem"]) or [""]
    return {
        "name": cert["name"], "fingerprint": leaf, "chain": chain, "server_names": cert.get("server_names", []),
        "private_key": "encrypted, " + token_digest(cert["key_pem_encrypted"]),
    }


def _readable_tls(vs: dict) -> dict:
    tls = vs.get("tls")
    if not tls or not tls.get("backend_ca"):
        return vs
    return {**vs, "tls": {**tls, "backend_ca": fingerprints(tls["backend_ca"])}}


def _walk(value, path, lines):
    if isinstance(value, dict):
        for key, item in value.items():
            _walk(item, f"{path}/{key}" if path else key, lines)
    elif isinstance(value, list | tuple) and value and all(isinstance(v, dict) and "name" in v for v in value):
        for item in value:
            rest = {k: v for k, v in item.items() if k not in ("name", "id")}
            _walk(rest, f"{path}/{item['name']}", lines)
            if not rest:
                lines.append(f"{path}/{item['name']}: {{}}")
    else:
        lines.append(f"{path}: {json.dumps(value)}")


def unified(before: dict, after: dict, before_label: str, after_label: str) -> list[str]:
    lines = difflib.unified_diff(flatten(before), flatten(after), before_label, after_label, lineterm="", n=0)
    # Hunk headers count lines of a listing nobody sees; every line already names its object.
    return [line for line in lines if not line.startswith("@@")]


def changed_objects(diff_lines: list[str]) -> list[str]:
    """The objects a diff touches, e.g. ['pools/uag', 'pools/uag/servers/uag1', 'virtual_services/vip'].

    Settings of a pool's health check count as the pool; a server is its own object.
    """
    objects = []
    for line in diff_lines:
        if line[:1] not in "+-" or line.startswith(("+++", "---")):
            continue
        path = line[1:].split(":", 1)[0].split("/")
        depth = 4 if len(path) > 4 and path[0] == "pools" and path[2] == "servers" else 2
        key = "/".join(path[:depth])
        if key not in objects:
            objects.append(key)
    return objects
