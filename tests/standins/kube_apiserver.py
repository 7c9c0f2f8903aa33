"""A stand-in for a Kubernetes API server, for tests on machines where no cluster can run.

Run it as its own process and point the official client at it with a kubeconfig:

    python kube_apiserver.py --port P [--token T] [--bookmark-interval S] [--history N]

It speaks plain HTTP on 127.0.0.1 (a kubeconfig `server: http://127.0.0.1:P` with a bearer token works with
the official `kubernetes` client) and serves the part of the REST protocol rrm's agent uses. Each rule a real
API server follows is cited where it is implemented (Kubernetes documentation, or the apiserver source where
the documentation is silent):

- Discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/apps/v1`, `/apis/dapr.io/v1alpha1`.
- ServiceAccount tokens: `POST .../serviceaccounts/{name}/token` (TokenRequest, authentication.k8s.io/v1)
  issues a bearer token for an existing ServiceAccount, `spec.expirationSeconds` at least 600 ("may not
  specify a duration less than 10 minutes", the apiserver's TokenRequest validation; default 3600). The
  token authenticates until it expires or its ServiceAccount is deleted: a bound token "is invalidated
  when the object it's bound to is deleted" (kubernetes.io/docs/reference/access-authn-authz/
  service-accounts-admin/#bound-service-account-tokens). A wrong or stale token is a 401.
- Namespaced resources: `secrets`, `pods` (core v1), `deployments`, `statefulsets` (apps/v1),
  `components`, `configurations` (dapr.io/v1alpha1, custom resources). Verbs: GET (object, or list with
  `labelSelector` and the collection's `resourceVersion`), POST, PUT, PATCH (JSON merge, JSON patch,
  strategic merge for built-in kinds, server-side apply), DELETE (with `preconditions.uid` /
  `resourceVersion`), and `?watch=true` streams.
- Optimistic concurrency on every write: a `metadata.resourceVersion` in a PUT body, a patch or an apply
  configuration is a precondition (409 Conflict when stale); a PUT without one is an unconditional update for
  the built-in kinds and refused (422) for custom resources.
- Server-side apply (`application/apply-patch+yaml`, `fieldManager` required, `force`): structured merge
  down to every leaf; lists of maps merge by the keys their schema declares (containers, initContainers,
  volumes and imagePullSecrets by `name`, env by `name`, ports by `containerPort`+`protocol`, volumeMounts by
  `mountPath`); every other list is atomic, which includes all lists of the Dapr Component CRD (it declares
  no `x-kubernetes-list-type`, so `spec.metadata` and `scopes` are atomic). Ownership per manager and
  operation is shown as `metadata.managedFields` (FieldsV1, `f:` fields and `k:` list items); a changed
  field another manager owns is a 409 listing each field and manager as the real server words it, unless
  `force`; a field the manager applied before and leaves out is removed unless another manager owns it.
  Non-apply writes are `Update` operations: their manager (`fieldManager`, else the User-Agent up to its
  first `/`) takes over the fields they change.
- One monotonically increasing `resourceVersion` for everything; a write that changes nothing keeps it and
  sends no event. Watches stream ADDED / MODIFIED / DELETED as chunked JSON lines, filtered by label
  selector the way the watch cache does it; `BOOKMARK` events when `allowWatchBookmarks=true` (every
  `--bookmark-interval` seconds, default 60); a `resourceVersion` older than the kept history
  (`--history` events, default 5000) answers an ERROR event with a 410 `Expired` Status.
- Validation: Components against the Component CRD's `openAPIV3Schema` (`rrm.dapr.component_crd_schema()`,
  Dapr v1.18.3), Secrets against the core rules (`data` values base64, keys `[-._a-zA-Z0-9]+`, `type`
  immutable, 1 MiB total), object names (DNS-1123 subdomain) and label keys/values for every kind:
  422 `Status` with reason `Invalid` and causes naming the field. Other failures are `Status` objects too:
  400, 401, 404 NotFound, 405, 409 AlreadyExists / Conflict, 415, 422.

Simplifications (what a real API server does differently):
- Strategic-merge patches merge maps and the keyed lists above, replace other lists, and refuse `$patch`
  and other directives (400); a list item without its key fields is keyed by null (the real server refuses
  it). `stringData` is folded into `data` on every write.
- No namespaces as objects (any namespace name is accepted), no admission, defaulting, pruning of unknown
  fields, finalizers, status subresources, generation other than for apps/v1, no RBAC (a `--token`, if
  given, and the ServiceAccount tokens issued are the only credentials, each allowed everything;
  ClusterRoleBindings are stored, not enforced), no field selectors, pagination, `resourceVersionMatch` or
  protobuf.
  Nothing runs unless `--rollout-seconds S` is given: then Deployments roll out, with pods and their Dapr
  sidecars' metrics, as `kube_workloads.py` describes (generation, observedGeneration, replica counts,
  conditions); otherwise Deployments and StatefulSets are stored objects and pods exist only if a test
  creates them.

Test-only: `GET /test/audit` answers every write so far in order, `[{"seq", "verb", "resource",
"namespace", "name", "manager", "resourceVersion"}]` (verb: apply, create, update, patch, delete);
`GET /test/watches` every watch request `[{"resource", "namespace", "resourceVersion", "code"}]` (code 410
when it was answered Expired; `bookmark`, the resourceVersion of the last BOOKMARK sent on it);
`POST /test/compact` forgets the event history up to now and ends every open watch, as an etcd compaction
and an API server restart would.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import yaml
from kube_workloads import DeploymentController, next_generation

from rrm.core.selectors import SelectorError, parse_selector
from rrm.dapr import component_crd_schema

Path = tuple[str, ...]  # FieldsV1 elements: "f:<field>" or "k:<the item's key fields as JSON>"
Lists = Mapping[tuple[str, ...], tuple[str, ...]]  # field names down to a list → its map keys

EVENT_HISTORY = 5000
BOOKMARK_INTERVAL = 60.0
DEFAULT_WATCH_SECONDS = 1800
SECRET_MAX_BYTES = 1024 * 1024
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
SYSTEM_METADATA = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")
# The apiserver's storage layer (registry/generic/registry/store.go, OptimisticLockErrorMsg).
OPTIMISTIC_LOCK = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
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
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def custom(self) -> bool:
        """Served from a CustomResourceDefinition (the Dapr kinds), not built in."""
        return self.group == "dapr.io"

    @property
    def qualified(self) -> str:
        """`plural.group`, as the real server names a resource in its messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES = [
    Resource("", "v1", "Secret", "secrets"),
    Resource("", "v1", "Pod", "pods"),
    # what installing the agent writes besides its Secret and Deployment (rrm.install.agent_objects)
    Resource("", "v1", "Namespace", "namespaces", namespaced=False),
    Resource("", "v1", "ServiceAccount", "serviceaccounts"),
    Resource("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    Resource("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    Resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    Resource(
        "rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False
    ),
    Resource("apps", "v1", "Deployment", "deployments"),
    Resource("apps", "v1", "StatefulSet", "statefulsets"),
    Resource("dapr.io", "v1alpha1", "Component", "components"),
    Resource("dapr.io", "v1alpha1", "Configuration", "configurations"),
]
BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
SERVICE_ACCOUNTS = BY_PATH[("", "v1", "serviceaccounts")]

# The associative lists of the core PodSpec (`x-kubernetes-list-type: map` and `x-kubernetes-list-map-keys`
# in the Kubernetes OpenAPI, from the `+listType=map` / `+listMapKey` markers of k8s.io/api/core/v1).
# Other lists of the built-in kinds are atomic. The Dapr Component CRD marks none of its lists, and "by
# default, Server-Side Apply treats custom resources as unstructured data. All keys are treated the same as
# struct fields, and all lists are considered atomic" (Server-Side Apply, Custom resources).
POD_SPEC_LISTS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("volumes",): ("name",),
    ("imagePullSecrets",): ("name",),
    **{
        (containers, *sub): keys
        for containers in ("containers", "initContainers")
        for sub, keys in (
            ((), ("name",)),
            (("env",), ("name",)),
            (("ports",), ("containerPort", "protocol")),
            (("volumeMounts",), ("mountPath",)),
        )
    },
}
KEY_DEFAULTS = {"protocol": "TCP"}  # ports[].protocol defaults to TCP, so it keys an item that omits it
LIST_KEYS: dict[str, Lists] = {
    "Pod": {("spec", *names): keys for names, keys in POD_SPEC_LISTS.items()},
    **{
        kind: {("spec", "template", "spec", *names): keys for names, keys in POD_SPEC_LISTS.items()}
        for kind in ("Deployment", "StatefulSet")
    },
}


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
        f'{resource.qualified} "{name}" not found',
        {"name": name, "group": resource.group, "kind": resource.plural},
    )


def stale(resource: Resource, name: str) -> ApiError:
    """A write whose resourceVersion precondition is not the stored one: "When a record is about to be
    updated, its version is checked against a pre-saved value, and if it doesn't match, the update fails
    with a StatusConflict (HTTP status code 409)" (API conventions, Concurrency Control and Consistency);
    message and details as the apiserver's `NewConflict` builds them."""
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource.qualified} "{name}": {OPTIMISTIC_LOCK}',
        {"name": name, "group": resource.group, "kind": resource.plural},
    )


def check_precondition(resource: Resource, name: str, wanted: Any, current: str) -> None:
    """The storage layer's check on every update (PUT, any PATCH, an apply over an existing object):
    `registry/generic/registry/store.go` compares the written object's resourceVersion with the stored one.
    Without one, `AllowUnconditionalUpdate()` decides: true for the built-in Secret, Pod, Deployment and
    StatefulSet strategies, false for custom resources, which get `metadata.resourceVersion: Invalid value:
    0x0: must be specified for an update` (the value is the parsed uint64 0)."""
    if not wanted:
        if resource.custom:
            cause = "Invalid value: 0x0: must be specified for an update"
            raise ApiError(
                422,
                "Invalid",
                f'{resource.qualified} "{name}" is invalid: metadata.resourceVersion: {cause}',
                {
                    "name": name,
                    "group": resource.group,
                    "kind": resource.plural,
                    "causes": [
                        {"reason": "FieldValueInvalid", "message": cause, "field": "metadata.resourceVersion"}
                    ],
                },
            )
        return
    if str(wanted) != current:
        raise stale(resource, name)


# --- field paths: structured merge ------------------------------------------------------------------------

ITEM = "<the list item itself>"  # the value of a path that names a list item (FieldsV1 `.`)
MISSING = object()


def item_key(item: Any, keys: tuple[str, ...]) -> str:
    """The FieldsV1 element of a list-map item: `k:` and its key fields as JSON."""
    values = {k: (item.get(k, KEY_DEFAULTS.get(k)) if isinstance(item, dict) else None) for k in keys}
    return "k:" + json.dumps(values, separators=(",", ":"), sort_keys=True)


def leaves(value: Any, lists: Lists, names: tuple[str, ...], prefix: Path) -> dict[Path, Any]:
    """Every field of `value` that can be owned, with its value: scalars, atomic lists and empty maps are
    leaves; maps are granular (each key its own field); items of an associative list are fields too."""
    if isinstance(value, dict) and value:
        found: dict[Path, Any] = {}
        for key, child in value.items():
            found.update(leaves(child, lists, (*names, key), (*prefix, f"f:{key}")))
        return found
    if isinstance(value, list) and names in lists:
        found = {}
        for item in value:
            path = (*prefix, item_key(item, lists[names]))
            found[path] = ITEM
            if isinstance(item, dict):
                found.update(leaves(item, lists, names, path))
        return found
    return {prefix: value}


def owned_fields(obj: Mapping[str, Any], resource: Resource) -> dict[Path, Any]:
    """The fields of an object that managers own. Identity and system metadata are never owned (the
    apiserver strips apiVersion, kind, name, namespace, uid, resourceVersion ... before tracking)."""
    lists = LIST_KEYS.get(resource.kind, {})
    paths: dict[Path, Any] = {}
    metadata = obj.get("metadata") or {}
    for section in ("labels", "annotations"):
        if metadata.get(section):
            paths.update(leaves(metadata[section], {}, (), ("f:metadata", f"f:{section}")))
    for key, value in obj.items():
        if key not in ("apiVersion", "kind", "metadata", "status"):
            paths.update(leaves(value, lists, (key,), (f"f:{key}",)))
    return paths


def _child(container: Any, element: str) -> Any:
    if element.startswith("f:"):
        return container.get(element[2:], MISSING) if isinstance(container, dict) else MISSING
    wanted = json.loads(element[2:])
    for item in container if isinstance(container, list) else []:
        if isinstance(item, dict) and all(item.get(k, KEY_DEFAULTS.get(k)) == v for k, v in wanted.items()):
            return item
    return MISSING


def remove_path(obj: dict[str, Any], path: Path) -> None:
    """Remove one field or list item; maps it leaves empty go too (but never `metadata` itself)."""
    trail: list[Any] = [obj]
    for element in path[:-1]:
        child = _child(trail[-1], element)
        if child is MISSING:
            return
        trail.append(child)
    for depth in range(len(path) - 1, -1, -1):
        container, element = trail[depth], path[depth]
        if isinstance(container, dict):
            container.pop(element[2:], None)
        elif isinstance(container, list):
            target = _child(container, element)
            container[:] = [item for item in container if item is not target]
        above = path[depth - 1] if depth else ""
        if container != {} or not above.startswith("f:") or above == "f:metadata":
            return


def merge_applied(live: Any, config: Any, lists: Lists, names: tuple[str, ...] = ()) -> Any:
    """The live value with the applied one merged in: maps key by key, associative lists item by item
    (matched by their keys, new items appended), anything else replaced."""
    if isinstance(config, dict) and isinstance(live, dict):
        merged = dict(live)
        for key, value in config.items():
            merged[key] = merge_applied(live.get(key), value, lists, (*names, key))
        return merged
    if isinstance(config, list) and isinstance(live, list) and names in lists:
        keys = lists[names]
        result = copy.deepcopy(live)
        index = {item_key(item, keys): n for n, item in enumerate(result)}
        for item in config:
            key = item_key(item, keys)
            if key in index:
                result[index[key]] = merge_applied(result[index[key]], item, lists, names)
            else:
                index[key] = len(result)
                result.append(copy.deepcopy(item))
        return result
    return copy.deepcopy(config)


def fields_v1(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
        if path[-1].startswith("k:"):
            node["."] = {}
    return tree


def path_text(path: Path) -> str:
    """A field path as the apiserver prints it: `.spec.template.spec.containers[name="app"].image`."""
    text = ""
    for element in path:
        if element.startswith("f:"):
            text += "." + element[2:]
        else:
            keys = json.loads(element[2:])
            text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
    return text


Manager = tuple[str, str]  # (field manager, operation)


def manager_text(manager: Manager, api_version: str) -> str:
    """How a conflict names a manager (fieldmanager `printManager`): `"name"` for an applier, `"name" using
    apps/v1` for an Update."""
    name, operation = manager
    return f'"{name}" using {api_version}' if operation == "Update" else f'"{name}"'


def apply_conflict(conflicts: list[tuple[Manager, Path]], api_version: str) -> ApiError:
    """409 as the apiserver's fieldmanager words it (`NewConflictError` / `getConflictMessage`): one cause
    per field, `Apply failed with 1 conflict: conflict with "m": .path`, or grouped by manager when there
    are more."""
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {manager_text(m, api_version)}",
            "field": path_text(p),
        }
        for m, p in conflicts
    ]
    if len(conflicts) == 1:
        ((manager, path),) = conflicts
        message = f"Apply failed with 1 conflict: conflict with {manager_text(manager, api_version)}: " + (
            path_text(path)
        )
    else:
        lines = []
        for manager in sorted({m for m, _ in conflicts}):
            lines.append(f"conflicts with {manager_text(manager, api_version)}:")
            lines += [f"- {path_text(p)}" for m, p in conflicts if m == manager]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


def took_over(
    owners: dict[Manager, set[Path]], manager: str, before: dict[Path, Any], after: dict[Path, Any]
) -> dict[Manager, set[Path]]:
    """Ownership after an Update: "whenever a field's value does change, ownership moves from its current
    manager to the manager making the change" (Server-Side Apply, Field management)."""
    touched = {p for p, v in after.items() if before.get(p, MISSING) != v}
    gone = set(before) - set(after)
    result = {key: paths - touched - gone for key, paths in owners.items()}
    result[(manager, "Update")] = result.get((manager, "Update"), set()) | touched
    return {key: paths for key, paths in result.items() if paths}


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
    owners: dict[Manager, set[Path]] = field(default_factory=dict)

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
    def __init__(self, history: int = EVENT_HISTORY, bookmark_interval: float = BOOKMARK_INTERVAL) -> None:
        self.objects: dict[tuple[Resource, str, str], Stored] = {}
        self.version = 100
        self.events: list[Event] = []
        self.history = history
        self.bookmark_interval = bookmark_interval
        self.compacted = self.version  # events up to this version are forgotten
        self.epoch = 0  # bumped to end every open watch
        self.audit: list[dict[str, Any]] = []
        self.watches: list[dict[str, Any]] = []
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
            if resource.group == "apps":  # kube_workloads: generation follows spec changes
                stored.obj["metadata"]["generation"] = next_generation(old, stored.obj)
            new = stored.rendered()
            self.objects[(resource, namespace, name)] = stored
        else:
            self.objects.pop((resource, namespace, name), None)
            if old is not None:
                old = copy.deepcopy(old)
                old["metadata"]["resourceVersion"] = str(self.version)
        self.events.append(Event(self.version, resource, namespace, old, new))
        if len(self.events) > self.history:
            del self.events[: -self.history]
            self.compacted = self.events[0].version - 1
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

    def compact(self) -> None:
        """Forget every event so far and end every open watch (test hook)."""
        with self.changed:
            self.events.clear()
            self.compacted = self.version
        self.end_watches()

    def end_watches(self) -> None:
        with self.changed:
            self.epoch += 1
            self.changed.notify_all()

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        with self.changed:
            stored = self.objects.get((resource, namespace, name))
            if stored is None:
                raise not_found(resource, name)
            return stored.rendered()

    def list_objects(self, resource: Resource, namespace: str, selector: str) -> dict[str, Any]:
        """The matching objects and the collection's resourceVersion: "the resourceVersion of the collection
        ... can be used to start a watch" (API Concepts, Efficient detection of changes)."""
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
                    f'{resource.qualified} "{name}" already exists',
                    {"name": name, "group": resource.group, "kind": resource.plural},
                )
            self._initialise(obj)
            stored = Stored(obj, {(manager, "Update"): set(owned_fields(obj, resource))})
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
        """PUT (change is the new object) or PATCH (change is a callable old → new)."""
        with self.changed:
            stored = self.objects.get((resource, namespace, name))
            if stored is None:
                raise not_found(resource, name)
            old = stored.obj
            new_body = change(copy.deepcopy(old)) if callable(change) else change
            wanted = (new_body.get("metadata") or {}).get("resourceVersion")
            check_precondition(resource, name, wanted, old["metadata"]["resourceVersion"])
            obj = self._prepared(resource, namespace, new_body, old, name)
            for key in SYSTEM_METADATA:
                if key in old["metadata"]:
                    obj["metadata"][key] = old["metadata"][key]
            if obj == old:
                return stored.rendered()
            owners = took_over(
                stored.owners, manager, owned_fields(old, resource), owned_fields(obj, resource)
            )
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
        config.pop("status", None)
        config["metadata"].pop("managedFields", None)
        applied = owned_fields(config, resource)
        with self.changed:
            stored = self.objects.get((resource, namespace, name))
            if stored is not None:
                wanted = config["metadata"].get("resourceVersion")
                current = stored.obj["metadata"]["resourceVersion"]
                check_precondition(resource, name, wanted or current, current)
            old = stored.obj if stored else None
            owners = self._apply_owners(resource, stored, manager, applied, force)
            obj = self._merged(resource, namespace, name, stored, owners, manager, config)
            owners[(manager, "Apply")] = set(applied)
            owners = {key: paths for key, paths in owners.items() if paths}
            obj = self._prepared(resource, namespace, obj, old, name)
            if stored is not None and obj == old and owners == stored.owners:
                return stored.rendered(), False
            if old is None:
                self._initialise(obj)
            before = stored.rendered() if stored else None
            result = self._commit("apply", resource, namespace, name, manager, before, Stored(obj, owners))
        assert result is not None
        return result, old is None

    @staticmethod
    def _apply_owners(
        resource: Resource, stored: Stored | None, manager: str, applied: dict[Path, Any], force: bool
    ) -> dict[Manager, set[Path]]:
        """Other managers' fields after the apply: "fields that have a different value and are owned by
        another manager will result in a conflict ... Writes ... can be forced, in which case the value of
        any conflicted field will be overridden, and the ownership will be transferred" (Server-Side Apply,
        Field management). Equal values are shared: "If two or more appliers set a field to the same value,
        they share ownership of that field" (Conflicts)."""
        owners = {key: set(paths) for key, paths in (stored.owners.items() if stored else [])}
        current = owned_fields(stored.obj, resource) if stored else {}
        conflicts = sorted(
            (other, path)
            for other, paths in owners.items()
            if other != (manager, "Apply")
            for path in paths
            if path in applied and applied[path] != ITEM and current.get(path, MISSING) != applied[path]
        )
        if conflicts and not force:
            raise apply_conflict(conflicts, resource.api_version)
        for other, path in conflicts:
            owners[other].discard(path)
        return owners

    @staticmethod
    def _merged(
        resource: Resource,
        namespace: str,
        name: str,
        stored: Stored | None,
        owners: dict[Manager, set[Path]],
        manager: str,
        config: dict[str, Any],
    ) -> dict[str, Any]:
        """The object after the apply. "If you remove a field from a manifest and apply that manifest,
        Server-Side Apply checks if there are any other field managers that also own the field. If the field
        is not owned by any other field managers, it is either deleted from the live object or reset to its
        default value ... The same rule applies to associative list or map items" (Server-Side Apply, Field
        management): a field stays while another manager owns it or anything inside it."""
        obj = (
            copy.deepcopy(stored.obj)
            if stored
            else {"apiVersion": resource.api_version, "kind": resource.kind, "metadata": {}}
        )
        applied = set(owned_fields(config, resource))
        kept = set().union(*(paths for key, paths in owners.items() if key != (manager, "Apply")))
        for path in sorted(owners.get((manager, "Apply"), set()) - applied, key=len):  # items before fields
            if not any(other[: len(path)] == path for other in kept):
                remove_path(obj, path)
        merged = merge_applied(obj, config, LIST_KEYS.get(resource.kind, {}))
        merged["metadata"].update(name=name, **({"namespace": namespace} if resource.namespaced else {}))
        return dict(merged)

    def delete(
        self, resource: Resource, namespace: str, name: str, manager: str, options: dict[str, Any]
    ) -> dict[str, Any]:
        with self.changed:
            stored = self.objects.get((resource, namespace, name))
            if stored is None:
                raise not_found(resource, name)
            preconditions = options.get("preconditions") or {}
            metadata = stored.obj["metadata"]
            for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                if preconditions.get(key) and preconditions[key] != metadata.get(key):
                    raise ApiError(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on {resource.qualified} "{name}": Precondition '
                        f"failed: {label} in precondition: {preconditions[key]}, {label} in object meta: "
                        f"{metadata.get(key)}",
                        {"name": name, "group": resource.group, "kind": resource.plural},
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
        if resource.namespaced:
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
        bookmarks: bool,
    ) -> Iterator[dict[str, Any]]:
        """Events after `since` (or ADDED for what exists when it is absent or 0), until `deadline`.

        "When the requested watch operations fail because the historical version of that resource is not
        available, clients must handle the case by recognizing the status code 410 Gone" (API Concepts,
        Efficient detection of changes); on a watch the server sends it as an ERROR event carrying the
        Status (the watch cache's "too old resource version: N (M)", reason Expired)."""
        initial: list[dict[str, Any]] | None
        record = {"resource": resource.plural, "namespace": namespace, "resourceVersion": since, "code": 200}
        with self.changed:
            epoch = self.epoch
            self.watches.append(record)
            cursor, initial = (int(since), []) if since and since != "0" else (self.version, None)
            if initial is None:
                initial = [
                    s.rendered()
                    for (r, ns, _), s in self.objects.items()
                    if r == resource and ns == namespace and matches(s.obj)
                ]
            elif cursor < self.compacted:
                record["code"] = 410
                expired = status_object(
                    410, "Expired", f"too old resource version: {since} ({self.compacted})"
                )
        if record["code"] == 410:
            yield {"type": "ERROR", "object": expired}
            return
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        yield from self._follow(resource, namespace, matches, cursor, deadline, bookmarks, (epoch, record))

    def _follow(
        self,
        resource: Resource,
        namespace: str,
        matches: Callable[[dict[str, Any]], bool],
        cursor: int,
        deadline: float,
        bookmarks: bool,
        watch: tuple[int, dict[str, Any]],
    ) -> Iterator[dict[str, Any]]:
        """Watch events after `cursor`, and a BOOKMARK every `bookmark_interval` if asked for: "a special
        kind of event to mark that all changes up to a given resourceVersion the client is requesting have
        already been sent" (API Concepts, Watch bookmarks); it carries only the kind and that version."""
        epoch, record = watch
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            with self.changed:
                if self.epoch != epoch:
                    return
                pending = [e for e in self.events if e.version > cursor]
                cursor = pending[-1].version if pending else cursor
                now, marker = time.monotonic(), None
                if bookmarks and now >= next_bookmark:
                    next_bookmark, cursor = now + self.bookmark_interval, self.version
                    marker = record["bookmark"] = str(self.version)
                if not pending and marker is None:
                    if now >= deadline:
                        return
                    self.changed.wait(min(deadline, next_bookmark if bookmarks else deadline) - now)
                    continue
            for event in pending:
                yield from _seen(event, resource, namespace, matches)
            if marker is not None:
                metadata = {"resourceVersion": marker}
                yield {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": resource.kind,
                        "apiVersion": resource.api_version,
                        "metadata": metadata,
                    },
                }


def _seen(
    event: Event, resource: Resource, namespace: str, matches: Callable[[dict[str, Any]], bool]
) -> Iterator[dict[str, Any]]:
    """An event as one label-selected watch sees it: an object that starts matching is ADDED, one that
    stops matching DELETED."""
    if event.resource != resource or event.namespace != namespace:
        return
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


# --- patches ----------------------------------------------------------------------------------------------


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


def strategic_merge_patch(target: Any, patch: Any, lists: Lists, names: tuple[str, ...] = ()) -> Any:
    """A JSON merge patch, except that lists with a merge key merge item by item (the same keys as apply)."""
    if isinstance(patch, dict):
        if any(str(key).startswith("$") for key in patch):
            raise ApiError(400, "BadRequest", "strategic merge patch directives are not supported here")
        result = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(result.get(key), value, lists, (*names, key))
        return result
    if isinstance(patch, list) and isinstance(target, list) and names in lists:
        return merge_applied(target, patch, lists, names)
    return copy.deepcopy(patch)


def _pointer(document: Any, pointer: str) -> tuple[Any, str]:
    """The container a JSON pointer (RFC 6901) ends in, and the last reference token."""
    if not pointer.startswith("/"):
        raise ApiError(400, "BadRequest", f"invalid JSON pointer: {pointer!r}")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]
    container = document
    for token in tokens[:-1]:
        try:
            container = container[int(token)] if isinstance(container, list) else container[token]
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"the path {pointer!r} does not exist") from exc
    return container, tokens[-1]


def json_patch(document: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902: add, remove, replace, move, copy and test, all or nothing."""
    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest", "a JSON patch is a list of operations")
    result = copy.deepcopy(document)
    for operation in operations:
        op = operation.get("op") if isinstance(operation, dict) else None
        if op not in ("add", "remove", "replace", "move", "copy", "test"):
            raise ApiError(400, "BadRequest", f"unexpected JSON patch operation: {operation!r}")
        value = operation.get("value")
        if op in ("move", "copy"):
            source, token = _pointer(result, str(operation.get("from", "")))
            value = _take(source, token, remove=op == "move")
        container, token = _pointer(result, str(operation.get("path", "")))
        if op == "test":
            if _take(container, token, remove=False) != value:
                raise ApiError(422, "Invalid", f"testing value {operation['path']} failed")
        elif op == "remove":
            _take(container, token, remove=True)
        else:
            if op == "replace":
                _take(container, token, remove=True)
            _put(container, token, copy.deepcopy(value))
    return result


def _take(container: Any, token: str, *, remove: bool) -> Any:
    try:
        if isinstance(container, list):
            return container.pop(int(token)) if remove else container[int(token)]
        return container.pop(token) if remove else container[token]
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
        raise ApiError(422, "Invalid", f"the path ending in {token!r} does not exist") from exc


def _put(container: Any, token: str, value: Any) -> None:
    if isinstance(container, list):
        if token == "-":
            container.append(value)
        elif token.isdigit() and int(token) <= len(container):
            container.insert(int(token), value)
        else:
            raise ApiError(422, "Invalid", f"the index {token!r} is out of range")
    elif isinstance(container, dict):
        container[token] = value
    else:
        raise ApiError(422, "Invalid", f"cannot add {token!r} to a scalar")


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
                "namespaced": r.namespaced,
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
# cluster-scoped: Namespaces and ClusterRoleBindings
CLUSTER_ROUTE = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?/?$"
)
TOKEN_ROUTE = re.compile(r"^/api/v1/namespaces/(?P<namespace>[^/]+)/serviceaccounts/(?P<name>[^/]+)/token/?$")
MIN_TOKEN_SECONDS, DEFAULT_TOKEN_SECONDS = 600, 3600


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiServer

    def setup(self) -> None:
        """No Nagle delay: a response goes out as two writes (head, body), and on a kept-alive connection the
        second one would wait for the client's delayed ACK, ~40 ms a request."""
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

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
        body = self._json(raw)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body is not a JSON object")
        return body

    @staticmethod
    def _json(raw: bytes) -> Any:
        try:
            return json.loads(raw or b"{}")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the request body is not JSON: {exc}") from exc

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if not self.server.authenticated(self.headers.get("Authorization") or ""):
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
        if path.startswith("/test/"):
            self._test_hook(path)
            return
        token_request = TOKEN_ROUTE.match(url.path)
        if token_request and self.command == "POST":
            body = self._json_body(self._body())
            self._send(201, self.server.issue_token(token_request["namespace"], token_request["name"], body))
            return
        match = ROUTE.match(url.path) or CLUSTER_ROUTE.match(url.path)
        if not match:
            self._body()
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({url.path})")
        parts = match.groupdict()
        group = parts.get("group") or ""
        version = parts.get("core") or parts["version"]
        resource = BY_PATH.get((group, version, match["plural"]))
        namespace, name = parts.get("namespace") or "", match["name"]
        if resource is None or resource.namespaced != bool(namespace):
            self._body()
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({url.path})")
        manager = query.get("fieldManager") or (self.headers.get("User-Agent") or "unknown").split("/")[0]
        self._dispatch(resource, namespace, name, manager, query, self._body())

    def _dispatch(
        self,
        resource: Resource,
        namespace: str,
        name: str | None,
        manager: str,
        query: dict[str, str],
        raw: bytes,
    ) -> None:
        """One verb on a collection or an object; the Gardener stand-in serves its kinds through it too."""
        store = self.server.store
        if self.command == "GET" and name is None and query.get("watch") in ("true", "1"):
            self._watch(resource, namespace, query)
        elif self.command == "GET" and name is None:
            self._send(200, store.list_objects(resource, namespace, query.get("labelSelector", "")))
        elif self.command == "GET" and name is not None:
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

    def _test_hook(self, path: str) -> None:
        store = self.server.store
        self._body()
        if self.command == "GET" and path in ("/test/audit", "/test/watches"):
            with store.changed:
                self._send(200, list(store.audit if path == "/test/audit" else store.watches))
        elif self.command == "POST" and path == "/test/compact":
            store.compact()
            self._send(200, {"compacted": store.compacted})
        else:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")

    def _patch(
        self, resource: Resource, namespace: str, name: str, manager: str, query: dict[str, str], raw: bytes
    ) -> None:
        """Apply, JSON patch, JSON merge patch, and strategic merge patch for built-in kinds only: custom
        resources are unstructured, with no patchMergeKey to merge by, so the apiserver refuses a strategic
        merge patch for them with 415 (endpoints/handlers/patch.go)."""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type == APPLY_PATCH:
            self._apply(resource, namespace, name, query, raw)
            return
        if query.get("force"):
            raise ApiError(400, "BadRequest", "force must be unset for non-apply patch requests")
        lists = LIST_KEYS.get(resource.kind, {})
        patches: dict[str, Callable[[Any, Any], Any]] = {
            MERGE_PATCH: merge_patch,
            JSON_PATCH: json_patch,
            **(
                {}
                if resource.custom
                else {STRATEGIC_MERGE_PATCH: lambda old, p: strategic_merge_patch(old, p, lists)}
            ),
        }
        if content_type not in patches:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{', '.join([*patches, APPLY_PATCH])}",
            )
        patch, patcher = self._json(raw), patches[content_type]
        if content_type != JSON_PATCH and not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "the patch is not a JSON object")
        result = self.server.store.update(
            "patch", resource, namespace, name, manager, lambda old: patcher(old, patch)
        )
        self._send(200, result)

    def _apply(
        self, resource: Resource, namespace: str, name: str, query: dict[str, str], raw: bytes
    ) -> None:
        """Server-side apply; the apiserver refuses one without a `fieldManager` (400)."""
        if not query.get("fieldManager"):
            raise ApiError(400, "BadRequest", "fieldManager is required for apply requests")
        try:
            config = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ApiError(400, "BadRequest", f"error decoding YAML: {exc}") from exc
        if not isinstance(config, dict):
            raise ApiError(400, "BadRequest", "the apply configuration is not an object")
        obj, created = self.server.store.apply(
            resource, namespace, name, query["fieldManager"], config, query.get("force") == "true"
        )
        self._send(201 if created else 200, obj)

    def _watch(self, resource: Resource, namespace: str, query: dict[str, str]) -> None:
        timeout = min(float(query.get("timeoutSeconds") or DEFAULT_WATCH_SECONDS), DEFAULT_WATCH_SECONDS)
        matches = compile_selector(query.get("labelSelector", ""))  # a bad selector is a 400, not a stream
        since = query.get("resourceVersion")
        if since and not since.isdigit():
            raise ApiError(400, "BadRequest", f"invalid resource version: {since}")
        events = self.server.store.watch(
            resource,
            namespace,
            matches,
            since,
            time.monotonic() + timeout,
            query.get("allowWatchBookmarks") in ("true", "1"),
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


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        port: int,
        token: str | None,
        history: int = EVENT_HISTORY,
        bookmark_interval: float = BOOKMARK_INTERVAL,
        rollout_seconds: float | None = None,
        sidecar_init_delay: float = 0.3,
    ) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.store = Store(history, bookmark_interval)
        self.controller: DeploymentController | None = None
        if rollout_seconds is not None:  # kube_workloads: Deployments roll out, pods run their sidecars
            resources = {r.plural: r for r in RESOURCES}
            self.controller = DeploymentController(self.store, resources, rollout_seconds, sidecar_init_delay)
            self.controller.start()
        self.token = token
        self.issued: dict[str, tuple[str, str, str, float]] = {}  # token → namespace, name, uid, expiry

    def authenticated(self, authorization: str) -> bool:
        """The `--token`, or a ServiceAccount token not expired whose ServiceAccount still exists."""
        if not self.token or authorization == f"Bearer {self.token}":
            return True
        issued = (
            self.issued.get(authorization.removeprefix("Bearer ")) if authorization[:7] == "Bearer " else None
        )
        if issued is None or issued[3] <= time.time():
            return False
        namespace, name, uid, _ = issued
        with self.store.changed:
            account = self.store.objects.get((SERVICE_ACCOUNTS, namespace, name))
            return account is not None and account.obj["metadata"]["uid"] == uid

    def issue_token(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A TokenRequest's answer: a new token bound to the ServiceAccount."""
        spec = body.get("spec") or {}
        seconds = spec.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS
        if not isinstance(seconds, int) or seconds < MIN_TOKEN_SECONDS:
            cause = ("spec.expirationSeconds", "may not specify a duration less than 10 minutes")
            raise invalid(Resource("authentication.k8s.io", "v1", "TokenRequest", "token"), name, [cause])
        account = self.store.get(SERVICE_ACCOUNTS, namespace, name)  # 404 when there is none
        token, expiry = f"standin-sa-{uuid.uuid4().hex}", time.time() + seconds
        self.issued[token] = (namespace, name, account["metadata"]["uid"], expiry)
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {**spec, "expirationSeconds": seconds},
            "status": {
                "token": token,
                "expirationTimestamp": datetime.fromtimestamp(expiry, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        }

    def server_close(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        self.store.end_watches()
        super().server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", help="the bearer token every request must carry")
    parser.add_argument("--history", type=int, default=EVENT_HISTORY, help="events kept for watches")
    parser.add_argument(
        "--bookmark-interval",
        type=float,
        default=BOOKMARK_INTERVAL,
        help="seconds between BOOKMARK events",
    )
    parser.add_argument(
        "--rollout-seconds",
        type=float,
        help="run Deployments (kube_workloads.py): each rollout completes after this many seconds",
    )
    parser.add_argument(
        "--sidecar-init-delay", type=float, default=0.3, help="seconds a pod's daprd takes per component"
    )
    args = parser.parse_args()
    server = ApiServer(
        args.port,
        args.token,
        args.history,
        args.bookmark_interval,
        args.rollout_seconds,
        args.sidecar_init_delay,
    )
    log(f"serving on http://127.0.0.1:{args.port}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
