"""A stand-in for a Kubernetes API server, for tests on machines where no cluster can run.

Run it as its own process and point the official client at it with a kubeconfig:

    python kube_apiserver.py --port P [--token T]

It speaks plain HTTP on 127.0.0.1 (a kubeconfig `server: http://127.0.0.1:P` with a bearer token works with
the official `kubernetes` client) and serves the part of the REST protocol rrm's agent uses:

- Discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/apps/v1`, `/apis/dapr.io/v1alpha1`.
- Namespaced resources: `secrets`, `pods` (core v1), `deployments`, `statefulsets` (apps/v1),
  `components`, `configurations` (dapr.io/v1alpha1). Verbs: GET (object, or list with `labelSelector`),
  POST (create), PUT (update, with a `metadata.resourceVersion` precondition), PATCH, DELETE (with
  `preconditions.uid` / `resourceVersion`), and `?watch=true&resourceVersion=N` streams.
- Server-side apply (`PATCH`, `application/apply-patch+yaml`, `fieldManager` required, `force`): field
  ownership per manager and operation, shown as `metadata.managedFields` (FieldsV1); 409 Conflict naming
  the other manager when it owns a field with another value and `force` is not set; a field the manager
  applied before and leaves out is removed unless someone else owns it. Non-apply writes (POST, PUT, merge
  and strategic-merge PATCH) are `Update` operations: their manager (`fieldManager`, else the User-Agent
  up to its first `/`) takes over every field they change, as on a real server.
- One monotonically increasing `resourceVersion` for everything; a write that changes nothing (an
  identical apply) keeps it and sends no event. Watch streams are chunked JSON lines `{"type", "object"}`
  with ADDED / MODIFIED / DELETED, filtered by label selector the way the watch cache does it (an object
  that stops matching is DELETED, one that starts matching ADDED); `resourceVersion` 0 or absent first
  sends ADDED for what exists; a version older than the kept history answers an ERROR event with 410.
- Validation: Components against the Component CRD's `openAPIV3Schema` (`rrm.dapr.component_crd_schema()`,
  Dapr v1.18.3), Secrets against the core rules (`data` values base64, keys `[-._a-zA-Z0-9]+`, `type`
  immutable, 1 MiB total), object names (DNS-1123 subdomain) and label keys/values for every kind:
  422 `Status` with reason `Invalid` and causes naming the field, like the real API. Other failures
  are `Status` objects too: 400, 401, 404 NotFound, 405, 409 AlreadyExists / Conflict, 415.

Simplifications (what a real API server does differently):
- Field ownership is tracked at this granularity only: each key of `metadata.labels` and
  `metadata.annotations`, each key of a top-level map (`data.<key>`, `spec.<field>`), and other top-level
  fields whole (`type`, `scopes`, `auth` of a Component is a map, so `auth.secretStore`). A real server
  goes down to every leaf and merges associative lists by key; here a list is one value.
- Strategic-merge patches are applied as JSON merge patches (maps merge, lists are replaced); JSON patch
  is refused (415). `stringData` is folded into `data` on every write.
- No namespaces as objects (any namespace name is accepted), no admission, defaulting, pruning of unknown
  fields, finalizers, garbage collection, generation or status subresources, no RBAC (a `--token`, if
  given, is the only credential), no field selectors, pagination or protobuf. Nothing runs: Deployments
  and StatefulSets are stored objects, pods exist only if a test creates them.

Test-only: `GET /test/audit` answers every write so far in order, `[{"seq", "verb", "resource",
"namespace", "name", "manager", "resourceVersion"}]` (verb: apply, create, update, patch, delete), so
tests can check the order in which an agent wrote.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import json
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import yaml

from rrm.core.selectors import SelectorError, parse_selector
from rrm.dapr import component_crd_schema

Path = tuple[str, ...]

EVENT_HISTORY = 5000
DEFAULT_WATCH_SECONDS = 1800
SECRET_MAX_BYTES = 1024 * 1024
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCHES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
SYSTEM_METADATA = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
NOT_SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
)
NOT_LABEL_KEY = "name part must consist of alphanumeric characters, '-', '_' or '.', at most 63"
NOT_LABEL_VALUE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'"
)
NOT_SECRET_KEY = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"


def log(message: str) -> None:
    print(f"kube-apiserver: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


RESOURCES = [
    Resource("", "v1", "Secret", "secrets"),
    Resource("", "v1", "Pod", "pods"),
    Resource("apps", "v1", "Deployment", "deployments"),
    Resource("apps", "v1", "StatefulSet", "statefulsets"),
    Resource("dapr.io", "v1alpha1", "Component", "components"),
    Resource("dapr.io", "v1alpha1", "Configuration", "configurations"),
]
BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}


class ApiError(Exception):
    """Answered as a `Status` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{resource.plural}{"." + resource.group if resource.group else ""} "{name}" not found',
        {"name": name, "group": resource.group, "kind": resource.plural},
    )


# --- field paths: the granularity of ownership ------------------------------------------------------------


def field_paths(obj: dict[str, Any]) -> dict[Path, Any]:
    """Every owned-field path of `obj` with its value (see the module docstring for the granularity)."""
    paths: dict[Path, Any] = {}
    metadata = obj.get("metadata") or {}
    for section in ("labels", "annotations"):
        for key, value in (metadata.get(section) or {}).items():
            paths[("metadata", section, key)] = value
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "metadata", "status"):
            continue
        if isinstance(value, dict) and value:
            for sub, sub_value in value.items():
                paths[(key, sub)] = sub_value
        else:
            paths[(key,)] = value
    return paths


def set_path(obj: dict[str, Any], path: Path, value: Any) -> None:
    target = obj
    for part in path[:-1]:
        if not isinstance(target.get(part), dict):
            target[part] = {}
        target = target[part]
    target[path[-1]] = copy.deepcopy(value)


def delete_path(obj: dict[str, Any], path: Path) -> None:
    parents = [obj]
    for part in path[:-1]:
        child = parents[-1].get(part)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):  # drop maps left empty (labels: {} → gone)
        if parents[depth] == {} and path[depth - 1] != "metadata":
            parents[depth - 1].pop(path[depth - 1], None)


def fields_v1(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return tree


def path_text(path: Path) -> str:
    return "." + ".".join(path)


# --- validation --------------------------------------------------------------------------------------------


def invalid(resource: Resource, name: str, causes: list[tuple[str, str]]) -> ApiError:
    text = ", ".join(f"{f}: {m}" for f, m in causes)
    return ApiError(
        422,
        "Invalid",
        f'{resource.kind}{"." + resource.group if resource.group else ""} "{name}" is invalid: {text}',
        {
            "name": name,
            "group": resource.group,
            "kind": resource.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
        },
    )


def metadata_problems(obj: dict[str, Any]) -> list[tuple[str, str]]:
    problems = []
    metadata = obj.get("metadata") or {}
    name = metadata.get("name")
    if not name:
        problems.append(("metadata.name", "Required value: name is required"))
    elif len(str(name)) > 253 or not DNS1123_SUBDOMAIN.match(str(name)):
        problems.append(("metadata.name", f'Invalid value: "{name}": {NOT_SUBDOMAIN}'))
    for key, value in (metadata.get("labels") or {}).items():
        prefix, _, label = str(key).rpartition("/")
        if (prefix and not DNS1123_SUBDOMAIN.match(prefix)) or len(label) > 63 or not LABEL_NAME.match(label):
            problems.append(("metadata.labels", f'Invalid value: "{key}": {NOT_LABEL_KEY}'))
        if not isinstance(value, str) or len(value) > 63 or (value and not LABEL_NAME.match(value)):
            problems.append(("metadata.labels", f'Invalid value: "{value}": {NOT_LABEL_VALUE}'))
    for key, value in (metadata.get("annotations") or {}).items():
        if not isinstance(value, str):
            problems.append(
                (f"metadata.annotations.{key}", "Invalid value: annotation values must be strings")
            )
    return problems


_COMPONENT_VALIDATOR = jsonschema.Draft7Validator(component_crd_schema())


def component_problems(obj: dict[str, Any]) -> list[tuple[str, str]]:
    problems = []
    for error in sorted(_COMPONENT_VALIDATOR.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        location = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(
            "."
        )
        if error.validator == "required":
            missing = re.search(r"'([^']+)' is a required property", error.message)
            where = (
                f"{location}.{missing[1]}" if location and missing else (missing[1] if missing else location)
            )
            problems.append((where, "Required value"))
        else:
            problems.append((location or "<root>", f"Invalid value: {error.message}"))
    return problems


def secret_problems(obj: dict[str, Any], old: dict[str, Any] | None) -> list[tuple[str, str]]:
    problems = []
    total = 0
    data = obj.get("data") or {}
    if not isinstance(data, dict):
        return [("data", "Invalid value: must be a map of strings")]
    for key, value in data.items():
        if not SECRET_KEY.match(str(key)) or len(str(key)) > 253:
            problems.append((f"data[{key}]", f'Invalid value: "{key}": {NOT_SECRET_KEY}'))
        try:
            total += len(base64.b64decode(str(value), validate=True))
        except (binascii.Error, ValueError):
            problems.append((f"data[{key}]", "Invalid value: illegal base64 data"))
    if total > SECRET_MAX_BYTES:
        problems.append(("data", f"Too long: must have at most {SECRET_MAX_BYTES} bytes"))
    if old is not None and obj.get("type", "Opaque") != old.get("type", "Opaque"):
        problems.append(("type", f'Invalid value: "{obj.get("type")}": field is immutable'))
    return problems


def fold_string_data(obj: dict[str, Any]) -> None:
    """`stringData` is write-only: merged into `data`, base64-encoded, as the real server does."""
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict):
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


# --- the store ----------------------------------------------------------------------------------------------


@dataclass
class Stored:
    obj: dict[str, Any]
    owners: dict[tuple[str, str], set[Path]] = field(default_factory=dict)  # (manager, operation) → paths

    def rendered(self) -> dict[str, Any]:
        obj = copy.deepcopy(self.obj)
        obj["metadata"]["managedFields"] = [
            {
                "manager": manager,
                "operation": operation,
                "apiVersion": obj.get("apiVersion"),
                "time": obj["metadata"]["creationTimestamp"],
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(paths),
            }
            for (manager, operation), paths in sorted(self.owners.items())
            if paths
        ]
        return obj


@dataclass
class Event:
    version: int
    resource: Resource
    namespace: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None


class Store:
    def __init__(self) -> None:
        self.objects: dict[tuple[Resource, str, str], Stored] = {}
        self.version = 100
        self.events: list[Event] = []
        self.audit: list[dict[str, Any]] = []
        self.changed = threading.Condition()

    # all callers hold self.changed

    def _commit(
        self,
        verb: str,
        resource: Resource,
        namespace: str,
        name: str,
        manager: str,
        old: dict[str, Any] | None,
        stored: Stored | None,
    ) -> dict[str, Any] | None:
        self.version += 1
        new = None
        if stored is not None:
            stored.obj["metadata"]["resourceVersion"] = str(self.version)
            new = stored.rendered()
            self.objects[(resource, namespace, name)] = stored
        else:
            self.objects.pop((resource, namespace, name), None)
            if old is not None:
                old = copy.deepcopy(old)
                old["metadata"]["resourceVersion"] = str(self.version)
        self.events.append(Event(self.version, resource, namespace, old, new))
        del self.events[:-EVENT_HISTORY]
        self.audit.append(
            {
                "seq": len(self.audit) + 1,
                "verb": verb,
                "resource": resource.plural,
                "namespace": namespace,
                "name": name,
                "manager": manager,
                "resourceVersion": str(self.version),
            }
        )
        self.changed.notify_all()
        return new

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        with self.changed:
            stored = self.objects.get((resource, namespace, name))
            if stored is None:
                raise not_found(resource, name)
            return stored.rendered()

    def list_objects(self, resource: Resource, namespace: str, selector: str) -> dict[str, Any]:
        matches = compile_selector(selector)
        with self.changed:
            items = [
                s.rendered()
                for (r, ns, _), s in sorted(self.objects.items(), key=lambda kv: kv[0][2])
                if r == resource and ns == namespace and matches(s.obj)
            ]
            version = str(self.version)
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": version},
            "items": items,
        }

    def create(
        self, resource: Resource, namespace: str, body: dict[str, Any], manager: str
    ) -> dict[str, Any]:
        obj = self._prepared(resource, namespace, body, None)
        name = obj["metadata"]["name"]
        with self.changed:
            if (resource, namespace, name) in self.objects:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{resource.plural} "{name}" already exists',
                    {"name": name, "group": resource.group, "kind": resource.plural},
                )
            self._initialise(obj)
            stored = Stored(obj, {(manager, "Update"): set(field_paths(obj))})
            result = self._commit("create", resource, namespace, name, manager, None, stored)
        assert result is not None
        return result

    def update(
        self,
        verb: str,
        resource: Resource,
        namespace: str,
        name: str,
        manager: str,
        change: Any,
    ) -> dict[str, Any]:
        """PUT (change is the new object) or merge PATCH (change is a callable old → new)."""
        with self.changed:
            stored = self.objects.get((resource, namespace, name))
            if stored is None:
                raise not_found(resource, name)
            old = stored.obj
            new_body = change(copy.deepcopy(old)) if callable(change) else change
            precondition = (new_body.get("metadata") or {}).get("resourceVersion")
            if verb == "update" and precondition and precondition != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource.plural} "{name}": '
                    "the object has been modified; please apply your changes to the latest version",
                )
            obj = self._prepared(resource, namespace, new_body, old, name)
            for key in SYSTEM_METADATA:
                if key in old["metadata"]:
                    obj["metadata"][key] = old["metadata"][key]
            if obj == old:
                return stored.rendered()
            before, after = field_paths(old), field_paths(obj)
            touched = {p for p in after if p not in before or before[p] != after[p]}
            removed = set(before) - set(after)
            owners = {key: paths - touched - removed for key, paths in stored.owners.items()}
            owners.setdefault((manager, "Update"), set()).update(touched)
            result = self._commit(
                verb, resource, namespace, name, manager, stored.rendered(), Stored(obj, owners)
            )
        assert result is not None
        return result

    def apply(
        self, resource: Resource, namespace: str, name: str, manager: str, config: dict[str, Any], force: bool
    ) -> tuple[dict[str, Any], bool]:
        """Server-side apply; answers the object and whether it was created."""
        fold_string_data(config)
        self._check_identity(resource, namespace, config, name)
        applied = field_paths(config)
        with self.changed:
            stored = self.objects.get((resource, namespace, name))
            old = stored.obj if stored else None
            obj = (
                copy.deepcopy(old)
                if old
                else {
                    "apiVersion": resource.api_version,
                    "kind": resource.kind,
                    "metadata": {"name": name, "namespace": namespace},
                }
            )
            owners = {key: set(paths) for key, paths in (stored.owners.items() if stored else [])}
            current = field_paths(obj)
            conflicts = [
                (path, other)
                for (other, operation), paths in owners.items()
                if other != manager
                for path in paths
                if path in applied and current.get(path) != applied[path]
            ]
            if conflicts and not force:
                text = "; ".join(f'conflict with "{m}": {path_text(p)}' for p, m in sorted(conflicts))
                raise ApiError(
                    409,
                    "Conflict",
                    f"Apply failed with {len(conflicts)} conflict(s): {text}",
                    {
                        "causes": [
                            {
                                "reason": "FieldManagerConflict",
                                "message": f'conflict with "{m}"',
                                "field": path_text(p),
                            }
                            for p, m in sorted(conflicts)
                        ]
                    },
                )
            taken = {path for path, _ in conflicts}
            for key in owners:
                if key[0] != manager:
                    owners[key] -= taken
            previously = owners.get((manager, "Apply"), set())
            still_owned = set().union(*(p for k, p in owners.items() if k != (manager, "Apply")))
            for path in previously - set(applied) - still_owned:
                delete_path(obj, path)
            for path, value in applied.items():
                set_path(obj, path, value)
            owners[(manager, "Apply")] = set(applied)
            obj = self._prepared(resource, namespace, obj, old, name)
            if stored is not None and obj == old and owners == stored.owners:
                return stored.rendered(), False
            if old is None:
                self._initialise(obj)
            result = self._commit(
                "apply",
                resource,
                namespace,
                name,
                manager,
                stored.rendered() if stored else None,
                Stored(obj, owners),
            )
        assert result is not None
        return result, old is None

    def delete(
        self, resource: Resource, namespace: str, name: str, manager: str, options: dict[str, Any]
    ) -> dict[str, Any]:
        with self.changed:
            stored = self.objects.get((resource, namespace, name))
            if stored is None:
                raise not_found(resource, name)
            preconditions = options.get("preconditions") or {}
            metadata = stored.obj["metadata"]
            for key in ("uid", "resourceVersion"):
                if preconditions.get(key) and preconditions[key] != metadata.get(key):
                    raise ApiError(
                        409,
                        "Conflict",
                        f"Precondition failed: {key}: {preconditions[key]}, "
                        f"object's {key}: {metadata.get(key)}",
                    )
            self._commit("delete", resource, namespace, name, manager, stored.rendered(), None)
        return status_object(
            200,
            "",
            "",
            {"name": name, "group": resource.group, "kind": resource.plural, "uid": metadata.get("uid")},
        ) | {"status": "Success"}

    def _check_identity(
        self, resource: Resource, namespace: str, body: dict[str, Any], name: str | None
    ) -> None:
        if body.get("apiVersion") != resource.api_version or body.get("kind") != resource.kind:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({body.get('apiVersion')}) and kind "
                f"({body.get('kind')}) do not match {resource.api_version} {resource.kind}",
            )
        metadata = body.get("metadata")
        if not isinstance(metadata, dict):
            raise ApiError(400, "BadRequest", "metadata is missing or not an object")
        if metadata.get("namespace") not in (None, "", namespace):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        if name is not None and metadata.get("name") not in (None, name):
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")

    def _prepared(
        self,
        resource: Resource,
        namespace: str,
        body: dict[str, Any],
        old: dict[str, Any] | None,
        name: str | None = None,
    ) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        if resource.kind == "Secret":
            fold_string_data(obj)
            obj.setdefault("type", "Opaque")
        self._check_identity(resource, namespace, obj, name)
        obj["metadata"]["namespace"] = namespace
        if name is not None:
            obj["metadata"]["name"] = name
        for key in ("managedFields",):
            obj["metadata"].pop(key, None)
        problems = metadata_problems(obj)
        if resource.kind == "Component":
            problems += component_problems(obj)
        if resource.kind == "Secret":
            problems += secret_problems(obj, old)
        if problems:
            raise invalid(resource, str(obj["metadata"].get("name")), problems)
        return obj

    @staticmethod
    def _initialise(obj: dict[str, Any]) -> None:
        obj["metadata"]["uid"] = str(uuid.uuid4())
        obj["metadata"]["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def watch(
        self,
        resource: Resource,
        namespace: str,
        matches: Callable[[dict[str, Any]], bool],
        since: str | None,
        deadline: float,
        stopping: threading.Event,
    ) -> Iterator[dict[str, Any]]:
        with self.changed:
            if not since or since == "0":
                cursor = self.version
                initial = [
                    s.rendered()
                    for (r, ns, _), s in self.objects.items()
                    if r == resource and ns == namespace and matches(s.obj)
                ]
            else:
                cursor = int(since)
                initial = []
                oldest = self.events[0].version if self.events else self.version + 1
                if cursor < oldest - 1 and cursor < self.version:
                    yield {
                        "type": "ERROR",
                        "object": status_object(
                            410, "Expired", f"too old resource version: {cursor} ({oldest - 1})"
                        ),
                    }
                    return
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        while not stopping.is_set():
            with self.changed:
                pending = [e for e in self.events if e.version > cursor]
                if not pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self.changed.wait(min(remaining, 0.5))
                    continue
                cursor = pending[-1].version
            for event in pending:
                if event.resource != resource or event.namespace != namespace:
                    continue
                was = event.old is not None and matches(event.old)
                now = event.new is not None and matches(event.new)
                if now:
                    yield {"type": "MODIFIED" if was else "ADDED", "object": event.new}
                elif was:
                    yield {"type": "DELETED", "object": event.new or event.old}


def compile_selector(text: str) -> Callable[[dict[str, Any]], bool]:
    try:
        selector = parse_selector(text or "")
    except SelectorError as exc:
        raise ApiError(400, "BadRequest", f"unable to parse requirement: {exc}") from exc
    return lambda obj: selector.matches((obj.get("metadata") or {}).get("labels") or {})


# --- HTTP -------------------------------------------------------------------------------------------------


def discovery(resources: list[Resource], group: str, version: str) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [
            {
                "name": r.plural,
                "singularName": r.kind.lower(),
                "namespaced": True,
                "kind": r.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            }
            for r in resources
            if r.group == group and r.version == version
        ],
    }


def group_list() -> dict[str, Any]:
    groups = sorted({(r.group, r.version) for r in RESOURCES if r.group})
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": g,
                "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
            }
            for g, v in groups
        ],
    }


ROUTE = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))/namespaces/(?P<namespace>[^/]+)"
    r"/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?/?$"
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:
        log(f"{self.command} {self.path} → {args[1] if len(args) > 1 else ''}")

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        try:
            self._route()
        except ApiError as exc:
            self._send(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, code: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body is not a JSON object")
        return body

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if self.server.token and self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self._body()
            raise ApiError(401, "Unauthorized", "Unauthorized")
        path = url.path.rstrip("/") or "/"
        static = {
            "/version": {"major": "1", "minor": "31", "gitVersion": "v1.31.0-standin"},
            "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
            "/apis": group_list(),
            "/api/v1": discovery(RESOURCES, "", "v1"),
        }
        static.update(
            {
                f"/apis/{r.group}/{r.version}": discovery(RESOURCES, r.group, r.version)
                for r in RESOURCES
                if r.group
            }
        )
        if self.command == "GET" and path in static:
            self._send(200, static[path])
            return
        if self.command == "GET" and path == "/test/audit":
            with self.server.store.changed:
                self._send(200, list(self.server.store.audit))
            return
        match = ROUTE.match(url.path)
        if not match:
            self._body()
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({url.path})")
        group = match["group"] or ""
        version = match["core"] or match["version"]
        resource = BY_PATH.get((group, version, match["plural"]))
        if resource is None:
            self._body()
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({url.path})")
        namespace, name = match["namespace"], match["name"]
        manager = query.get("fieldManager") or (self.headers.get("User-Agent") or "unknown").split("/")[0]
        store = self.server.store
        raw = self._body()
        if self.command == "GET" and name is None and query.get("watch") in ("true", "1"):
            self._watch(resource, namespace, query)
        elif self.command == "GET" and name is None:
            self._send(200, store.list_objects(resource, namespace, query.get("labelSelector", "")))
        elif self.command == "GET":
            self._send(200, store.get(resource, namespace, name))
        elif self.command == "POST" and name is None:
            self._send(201, store.create(resource, namespace, self._json_body(raw), manager))
        elif self.command == "PUT" and name is not None:
            self._send(200, store.update("update", resource, namespace, name, manager, self._json_body(raw)))
        elif self.command == "PATCH" and name is not None:
            self._patch(resource, namespace, name, manager, query, raw)
        elif self.command == "DELETE" and name is not None:
            options = self._json_body(raw) if raw else {}
            self._send(200, store.delete(resource, namespace, name, manager, options))
        else:
            raise ApiError(405, "MethodNotAllowed", f"{self.command} is not supported here")

    def _patch(
        self, resource: Resource, namespace: str, name: str, manager: str, query: dict[str, str], raw: bytes
    ) -> None:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        store = self.server.store
        if content_type == APPLY_PATCH:
            if not query.get("fieldManager"):
                raise ApiError(400, "BadRequest", "fieldManager is required for apply requests")
            try:
                config = yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                raise ApiError(400, "BadRequest", f"error decoding YAML: {exc}") from exc
            if not isinstance(config, dict):
                raise ApiError(400, "BadRequest", "the apply configuration is not an object")
            obj, created = store.apply(
                resource, namespace, name, manager, config, query.get("force") == "true"
            )
            self._send(201 if created else 200, obj)
        elif content_type in MERGE_PATCHES:
            if query.get("force"):
                raise ApiError(400, "BadRequest", "force must be unset for non-apply patch requests")
            patch = self._json_body(raw)
            self._send(
                200,
                store.update(
                    "patch", resource, namespace, name, manager, lambda old: merge_patch(old, patch)
                ),
            )
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format ({content_type})",
            )

    def _watch(self, resource: Resource, namespace: str, query: dict[str, str]) -> None:
        timeout = min(float(query.get("timeoutSeconds") or DEFAULT_WATCH_SECONDS), DEFAULT_WATCH_SECONDS)
        matches = compile_selector(query.get("labelSelector", ""))  # a bad selector is a 400, not a stream
        events = self.server.store.watch(
            resource,
            namespace,
            matches,
            query.get("resourceVersion"),
            time.monotonic() + timeout,
            self.server.stopping,
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        try:
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, token: str | None) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.store = Store()
        self.token = token
        self.stopping = threading.Event()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", help="the bearer token every request must carry")
    args = parser.parse_args()
    server = ApiServer(args.port, args.token)
    log(f"serving on http://127.0.0.1:{args.port}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()


if __name__ == "__main__":
    main()
