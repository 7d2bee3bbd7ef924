"""The configuration as a YAML document: export, strict parsing with line numbers, loading.

The document lists persistence policies, health checks, pools (with their
servers), virtual services and certificates, referring to each other by name. Parsing walks
PyYAML's node tree rather than plain Python values so that every error can
say `line N: path: reason`. Loading replaces the whole configuration: objects
are matched by name, so unchanged objects keep their ids and produce no audit
entries, and a round trip export -> apply changes nothing.

Certificates carry their private key as the encrypted token (`key_encrypted`,
Fernet under VIEWLB_CERT_KEY), so an export never writes a clear key and a
round trip is a no-op; `key_pem` (a clear key) is accepted on apply and
encrypted at once.

The caller wraps `load_document` in a transaction; any error leaves the
database as it was.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import yaml
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import transaction

from proxyworker import config
from proxyworker.tlsconf import CertificateError

from . import certificates
from .audit import field_changes, record
from .models import Certificate, HealthCheck, PersistencePolicy, Pool, RealServer, VirtualService

# Field kinds of the document. REF names another object (or is null); NAMES is a list of such names;
# CODES is a list of HTTP statuses.
STR, INT, FLOAT, BOOL, CODES, REF, NAMES, SERVERS = (
    "string", "integer", "number", "true or false", "codes", "ref", "names", "servers"
)


@dataclass(frozen=True)
class Section:
    model: type
    fields: dict  # name -> kind
    required: tuple = ("name",)
    refs: dict = field(default_factory=dict)  # field -> section it names


SERVER = Section(
    RealServer,
    {"name": STR, "address": STR, "port": INT, "weight": INT, "backup": BOOL, "admin_state": STR},
    required=("name", "address", "port"),
)
SECTIONS = {
    "persistence_policies": Section(
        PersistencePolicy,
        {"name": STR, "method": STR, "timeout": INT, "ipv4_mask": INT, "ipv6_mask": INT, "cookie_name": STR},
    ),
    "health_checks": Section(
        HealthCheck,
        {
            "name": STR, "type": STR, "method": STR, "path": STR, "host": STR, "sni": STR, "expect_up": CODES,
            "expect_drain": CODES, "verify_certificate": BOOL, "interval": FLOAT, "timeout": FLOAT,
            "rise": INT, "fall": INT,
        },
    ),
    "pools": Section(
        Pool, {"name": STR, "health_check": REF, "servers": SERVERS}, refs={"health_check": "health_checks"}
    ),
    "virtual_services": Section(
        VirtualService,
        {
            "name": STR, "address": STR, "port": INT, "protocol": STR, "mode": STR, "pool": REF, "scheduler": STR,
            "persistence": REF, "persistence_group": STR, "connect_timeout": FLOAT, "idle_timeout": FLOAT,
            "max_connections": INT, "enabled": BOOL, "certificates": NAMES, "backend_tls": BOOL,
            "backend_verify": BOOL, "backend_ca": STR,
        },
        required=("name", "address", "port", "pool"),
        refs={"pool": "pools", "persistence": "persistence_policies", "certificates": "certificates"},
    ),
    "certificates": Section(
        Certificate,
        {"name": STR, "cert_pem": STR, "chain_pem": STR, "key_encrypted": STR, "key_pem": STR},
        required=("name", "cert_pem"),
    ),
}
TOP_LEVEL = ("schema", *SECTIONS)
SINGULAR = {
    "persistence_policies": "persistence policy", "health_checks": "health check", "pools": "pool",
    "certificates": "certificate",
}


class DeclarativeError(ValueError):
    """Bad input; str() is 'line N: path: reason'."""

    def __init__(self, line: int | None, path: str, reason: str):
        prefix = (f"line {line}: " if line else "") + (f"{path}: " if path else "")
        super().__init__(prefix + reason)
        self.line, self.path, self.reason = line, path, reason


@dataclass
class Item:
    """One object of the document: its values, and the line of each value."""

    path: str
    line: int | None
    values: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)
    servers: list[Item] = field(default_factory=list)

    @property
    def name(self):
        return self.values["name"]

    def error(self, field_name: str | None, reason: str) -> DeclarativeError:
        path = f"{self.path}.{field_name}" if field_name else self.path
        return DeclarativeError(self.lines.get(field_name, self.line), path, reason)


@dataclass
class Document:
    sections: dict  # section name -> list[Item]
    show_lines: bool = True

    @classmethod
    def from_data(cls, data: dict) -> Document:
        """A stored document (a version's), read through the same strict parser."""
        document = parse_yaml(dump_yaml(data))
        document.show_lines = False
        return document

    def find(self, section: str, name: str) -> Item | None:
        if section == "servers":
            pool_name, server_name = name.split("/", 1)
            pool = self.find("pools", pool_name)
            return next((s for s in pool.servers if s.name == server_name), None) if pool else None
        return next((item for item in self.sections.get(section, []) if item.name == name), None)

    def error(self, section, name, field_name, reason) -> DeclarativeError:
        """The error for a problem found by name, e.g. by the snapshot validation."""
        item = self.find(section, name) if section else None
        if item is None:
            return DeclarativeError(None, field_name or "", reason)
        return self.error_for(item, field_name, reason)

    def error_for(self, item: Item, field_name: str | None, reason: str) -> DeclarativeError:
        error = item.error(None if field_name == "__all__" else field_name, reason)
        # A stored document (rollback) was never a file anyone saw: its line numbers mean nothing.
        return error if self.show_lines else DeclarativeError(None, error.path, reason)


# --- export ------------------------------------------------------------------


def export_document() -> dict:
    """The configuration as plain data: objects by name, sorted, every field present."""
    def named(obj, values):
        return {"name": obj.name, **values}

    return {
        "schema": config.SCHEMA,
        "persistence_policies": [named(p, p.to_schema()) for p in PersistencePolicy.objects.order_by("name")],
        "health_checks": [named(h, h.to_schema()) for h in HealthCheck.objects.order_by("name")],
        "pools": [
            {
                "name": pool.name,
                "health_check": pool.health_check.name if pool.health_check else None,
                "servers": [_server_values(s) for s in pool.servers.order_by("name")],
            }
            for pool in Pool.objects.select_related("health_check").prefetch_related("servers").order_by("name")
        ],
        "virtual_services": [
            _service_values(vs)
            for vs in VirtualService.objects.select_related("pool", "persistence").prefetch_related(
                "certificate_links__certificate")
        ],
        "certificates": [
            {"name": c.name, "cert_pem": c.cert_pem, "chain_pem": c.chain_pem, "key_encrypted": c.key_encrypted}
            for c in Certificate.objects.order_by("name")
        ],
    }


def _server_values(server):
    return {key: value for key, value in server.to_schema().items() if key != "id"}


def _service_values(vs):
    values = vs.to_schema()
    del values["tls"]  # the same settings, flat and for every mode
    values["persistence"] = vs.persistence.name if vs.persistence else None
    values["certificates"] = [cert.name for cert in vs.ordered_certificates()]
    values.update({name: getattr(vs, name) for name in VirtualService.TLS_FIELDS})
    return values


class _Dumper(yaml.SafeDumper):
    """Indented block lists, short lists of scalars on one line ([200, 204])."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def _represent_list(dumper, data):
    flow = all(not isinstance(item, dict | list) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_str(dumper, data):
    # PEM blocks as literal blocks: readable, and copied in and out without escapes.
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(str, _represent_str)
HEADER = (
    "# viewlb configuration. Apply with: python manage.py viewlb apply -f FILE\n"
    "# Objects refer to each other by name; a missing optional field takes its default.\n"
)


def dump_yaml(data: dict) -> str:
    return HEADER + yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)


# --- parsing -----------------------------------------------------------------


def parse_yaml(text: str) -> Document:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise DeclarativeError(mark.line + 1 if mark else None, "", f"not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise DeclarativeError(None, "", f"not valid YAML: {exc}") from None
    if root is None:
        raise DeclarativeError(1, "", "the document is empty; export the configuration to see its format")
    return _Parser().document(root)


def _line(node) -> int:
    return node.start_mark.line + 1


class _Parser:
    def __init__(self):
        self.constructor = yaml.constructor.SafeConstructor()
        self.seen = set()  # collection nodes already read: an alias would read one twice

    def once(self, node, path):
        """Refuse aliases of lists and mappings: they add nothing to a configuration but can
        multiply one small file into millions of objects."""
        if id(node) in self.seen:
            raise DeclarativeError(_line(node), path, "YAML aliases (*name) of lists or mappings are not supported")
        self.seen.add(id(node))

    def document(self, root) -> Document:
        top = self.mapping(root, "", TOP_LEVEL, "the document")
        if "schema" in top:
            node = top["schema"][1]
            if self.scalar(node) != config.SCHEMA:
                raise DeclarativeError(_line(node), "schema", f"this appliance reads schema {config.SCHEMA}")
        sections = {}
        for name, section in SECTIONS.items():
            if name in top:
                sections[name] = self.items(top[name][1], name, section)
            else:
                sections[name] = []
        document = Document(sections)
        _check_names(document)
        return document

    def mapping(self, node, path, allowed, what) -> dict:
        """{key: (key node, value node)}, refusing unknown and duplicate keys."""
        if not isinstance(node, yaml.MappingNode):
            raise DeclarativeError(_line(node), path, f"{what} must be a mapping of keys to values")
        self.once(node, path)
        result = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            where = f"{path}.{key}" if path else str(key)
            if key not in allowed:
                raise DeclarativeError(_line(key_node), where, f"unknown field; expected one of {', '.join(allowed)}")
            if key in result:
                raise DeclarativeError(_line(key_node), where, f"appears twice (first on line {_line(result[key][0])})")
            if id(value_node) in self.seen:  # the alias's own line is gone after composing; its key's is not
                raise DeclarativeError(_line(key_node), where, "YAML aliases (*name) of lists or mappings are not supported")
            result[key] = (key_node, value_node)
        return result

    def items(self, node, path, section) -> list[Item]:
        if isinstance(node, yaml.ScalarNode) and self.scalar(node) is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise DeclarativeError(_line(node), path, "must be a list")
        self.once(node, path)
        return [self.item(child, f"{path}[{i}]", section) for i, child in enumerate(node.value)]

    def item(self, node, path, section) -> Item:
        fields = self.mapping(node, path, tuple(section.fields), "each entry")
        item = Item(path, _line(node))
        for name in section.required:
            if name not in fields:
                raise DeclarativeError(_line(node), f"{path}.{name}", "is required")
        for name, (_key, value_node) in fields.items():
            item.lines[name] = _line(value_node)
            kind = section.fields[name]
            if kind == SERVERS:
                item.servers = self.items(value_node, f"{path}.servers", SERVER)
            else:
                item.values[name] = self.value(value_node, f"{path}.{name}", kind, section.model, name)
        return item

    def value(self, node, path, kind, model, name):
        if kind == NAMES:
            return self.names(node, path)
        if not isinstance(node, yaml.ScalarNode):
            if kind == CODES and isinstance(node, yaml.SequenceNode):
                return ",".join(str(self.value(child, path, CODES, model, name)) for child in node.value)
            raise DeclarativeError(_line(node), path, f"must be a {'list of status codes' if kind == CODES else kind}")
        value = self.scalar(node)
        problem = _type_problem(kind, value)
        if problem:
            raise DeclarativeError(_line(node), path, problem)
        if kind == STR:
            allowed = [choice for choice, _label in _choices(model, name)]
            if allowed and value not in allowed:
                raise DeclarativeError(_line(node), path, f"must be one of {', '.join(allowed)}, not {value!r}")
        if kind == FLOAT:
            return float(value)
        return str(value) if kind == CODES else value

    def names(self, node, path) -> list[str]:
        if isinstance(node, yaml.ScalarNode) and self.scalar(node) is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise DeclarativeError(_line(node), path, "must be a list of names")
        self.once(node, path)
        names = []
        for child in node.value:
            value = self.scalar(child) if isinstance(child, yaml.ScalarNode) else None
            if not isinstance(value, str):
                raise DeclarativeError(_line(child), path, f"must be a list of names, not containing {value!r}")
            if value in names:
                raise DeclarativeError(_line(child), path, f"{value!r} appears twice")
            names.append(value)
        return names

    def scalar(self, node):
        return self.constructor.construct_object(node, deep=True)


def _choices(model, name):
    try:
        return model._meta.get_field(name).choices or ()
    except FieldDoesNotExist:  # document-only fields such as a certificate's key_pem
        return ()


def _type_problem(kind, value) -> str | None:
    if kind in (STR, REF):
        if isinstance(value, str) or (kind == REF and value is None):
            return None
        return f"must be a string{' or null' if kind == REF else ''}, not {value!r} (quote it if it is a name)"
    if kind == BOOL:
        return None if isinstance(value, bool) else f"must be true or false, not {value!r}"
    if kind in (INT, CODES):
        return None if isinstance(value, int) and not isinstance(value, bool) else f"must be an integer, not {value!r}"
    if kind == FLOAT:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"must be a number, not {value!r}"
    return None


def _check_names(document: Document):
    """Duplicate names and references to objects the document does not define."""
    names = {}
    for section_name, items in document.sections.items():
        names[section_name] = _unique(items)
        for item in items:
            _unique(item.servers)
    for section_name, items in document.sections.items():
        for item in items:
            for ref_field, target in SECTIONS[section_name].refs.items():
                ref = item.values.get(ref_field)
                for name in ref if isinstance(ref, list) else [ref]:
                    if name is not None and name not in names[target]:
                        raise item.error(ref_field, f"no {SINGULAR[target]} named {name!r} in this document")


def _unique(items) -> set:
    seen = {}
    for item in items:
        if item.name in seen:
            raise item.error("name", f"{item.name!r} appears twice (first on line {seen[item.name].line})")
        seen[item.name] = item
    return set(seen)


# --- loading -----------------------------------------------------------------


def load_document(document: Document, user, source: str):
    """Make the database hold exactly the document's configuration (inside the caller's transaction)."""
    with transaction.atomic():
        _Loader(document, user, source).run()


class _Loader:
    def __init__(self, document, user, source):
        self.document, self.user, self.source = document, user, source

    def run(self):
        sections = self.document.sections
        wanted_services = {item.name for item in sections["virtual_services"]}
        # Services first: they hold the references that protect pools and policies from deletion.
        self.delete(VirtualService.objects.exclude(name__in=wanted_services))
        certs = {item.name: self.save_certificate(item) for item in sections["certificates"]}
        policies = self.upsert(PersistencePolicy, sections["persistence_policies"], {})
        checks = self.upsert(HealthCheck, sections["health_checks"], {})
        pools = self.upsert(Pool, sections["pools"], {"health_check": checks})
        for item in sections["pools"]:
            pool = pools[item.name]
            self.delete(pool.servers.exclude(name__in=[s.name for s in item.servers]))
            self.upsert(RealServer, item.servers, {}, pool=pool)
        self.upsert(VirtualService, sections["virtual_services"],
                    {"pool": pools, "persistence": policies, "certificates": certs})
        self.delete(Certificate.objects.exclude(name__in=certs))
        self.delete(Pool.objects.exclude(name__in=pools))
        self.delete(HealthCheck.objects.exclude(name__in=checks))
        self.delete(PersistencePolicy.objects.exclude(name__in=policies))

    def delete(self, queryset):
        for obj in queryset:
            record(self.user, "delete", obj, obj.field_values(), source=self.source)
            obj.delete()

    def upsert(self, model, items, refs, **parent) -> dict:
        existing = {obj.name: obj for obj in model.objects.filter(**parent)}
        result = {}
        for item in items:
            obj = existing.get(item.name) or model(name=item.name, **parent)
            result[item.name] = self.save(obj, item, refs)
        return result

    def save(self, obj, item, refs):
        before = obj.field_values() if obj.pk else None
        section = SERVER if isinstance(obj, RealServer) else next(s for s in SECTIONS.values() if s.model is type(obj))
        linked = None
        for name, kind in section.fields.items():
            if kind == SERVERS or name == "name":
                continue
            if kind == NAMES:  # a service's certificates, in order; linked once the service is saved
                linked = [refs[name][ref] for ref in item.values.get(name, [])]
                continue
            value = item.values.get(name, _default(obj, name))
            if kind == REF:
                value = refs[name][value] if value is not None else None
            setattr(obj, name, value)
        obj.check_references = False  # checked on the finished configuration by the caller
        try:
            obj.full_clean()
        except ValidationError as exc:
            field_name, messages = next(iter(exc.message_dict.items()))
            raise self.document.error_for(item, field_name, "; ".join(messages)) from None
        after = obj.field_values()
        if linked is not None:
            problem = obj.certificate_error(linked)
            if problem:
                raise self.document.error_for(item, "certificates", problem)
            after["certificates"] = [cert.name for cert in linked]
        if before is None:
            obj.save()
            record(self.user, "create", obj, after, source=self.source)
        elif before != after:
            obj.save()
            record(self.user, "update", obj, field_changes(before, after), source=self.source)
        if linked is not None and (before or {}).get("certificates") != after["certificates"]:
            obj.set_certificates(linked)
        return obj

    def save_certificate(self, item) -> Certificate:
        obj = Certificate.objects.filter(name=item.name).first() or Certificate(name=item.name)
        key, key_field = self.certificate_key(obj, item)
        before, token = (obj.field_values() if obj.pk else None), obj.key_encrypted
        given = item.values.get("key_encrypted") if key is not None else None
        try:
            obj.set_material(item.values["cert_pem"], item.values.get("chain_pem", ""), key, token=given)
            obj.full_clean()
        except ValidationError as exc:
            field_name, messages = next(iter(exc.message_dict.items()))
            field_name = key_field if field_name == "key_pem" else field_name
            raise self.document.error_for(item, field_name, "; ".join(messages)) from None
        after = obj.field_values()
        if before is None:
            obj.save()
            record(self.user, "create", obj, after, source=self.source)
        elif before != after or token != obj.key_encrypted:
            obj.save()
            changes = field_changes(before, after)
            if token != obj.key_encrypted:
                changes["private_key"] = ["(encrypted)", "(replaced, encrypted)"]
            record(self.user, "update", obj, changes, source=self.source)
        return obj

    def certificate_key(self, obj, item) -> tuple[str | None, str]:
        """(clear key or None to keep the stored one, the field errors about the key belong to)."""
        values = item.values
        if "key_pem" in values and "key_encrypted" in values:
            raise self.document.error_for(item, "key_pem", "give key_pem (clear) or key_encrypted (as exported), not both")
        if "key_pem" in values:
            return values["key_pem"], "key_pem"
        if "key_encrypted" not in values:
            if obj.pk:
                return None, "key_encrypted"
            raise self.document.error_for(item, None, "needs the private key: key_pem (clear, encrypted on apply) "
                                                      "or key_encrypted (as exported)")
        if values["key_encrypted"] == obj.key_encrypted:
            return None, "key_encrypted"  # as exported: the stored key, already checked
        try:
            return certificates.decrypt_key(values["key_encrypted"]), "key_encrypted"
        except CertificateError as exc:
            raise self.document.error_for(item, "key_encrypted", str(exc)) from None


def _default(obj, name):
    model_field = obj._meta.get_field(name)
    return None if model_field.is_relation else model_field.get_default()
