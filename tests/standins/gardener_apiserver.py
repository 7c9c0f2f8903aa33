"""A stand-in for Gardener's API server (the garden cluster) and its gardenlet, for provisioning tests.

Run it as its own process (it prints its port on stdout, then logs to stderr):

    python gardener_apiserver.py --port P [--token T] [--kubeconfig FILE] [--create-seconds S]
        [--delete-seconds S] [--max-expiration S]

or in-process: `GardenerApiServer(0, token, create_seconds=0).start()` … `.stop()`. It speaks plain HTTP on
127.0.0.1, like the Kubernetes stand-in it builds on (`kube_apiserver.py`: the same store, so the same
optimistic concurrency, server-side apply with field managers, merge and JSON patches, label-selected lists
and watches), and serves, in project namespaces `garden-<project>`:

- `core.gardener.cloud/v1beta1` `shoots` and `secretbindings`, `security.gardener.cloud/v1alpha1`
  `credentialsbindings`: get, list (`labelSelector`), create, update, patch, apply, delete, watch. A PUT
  without `metadata.resourceVersion` is an unconditional update for SecretBindings and refused (422) for
  Shoots and CredentialsBindings (each strategy's `AllowUnconditionalUpdate`); a stale one is 409 Conflict.
- `POST shoots/{name}/adminkubeconfig` (`authentication.gardener.cloud/v1alpha1` `AdminKubeconfigRequest`).

Gardener's rules, each cited where it is implemented (gardener/gardener @ b312835d):
- Shoot validation (`pkg/api/core/validation/shoot.go`): required fields, immutable fields, exactly one of
  `secretBindingName` / `credentialsBindingName` (the former forbidden from Kubernetes 1.34), the `gardener`
  finalizer forbidden on creation, no spec change once deletion started; the project + shoot name length
  limit (`plugin/pkg/shoot/validator`). Failures are 422 `Invalid` with a cause per field.
- `status` is written only by the gardenlet (the strategy copies the old status on every update);
  `metadata.generation` starts at 1 and grows when the spec changes or deletion starts.
- A referenced binding must exist (`plugin/pkg/global/resourcereferencemanager`): 403 Forbidden.
- Deletion must be confirmed first with `confirmation.gardener.cloud/deletion: "true"`
  (`plugin/pkg/global/deletionconfirmation`): 403 Forbidden otherwise.
- Bindings: `secretRef` / `credentialsRef`, `quotas` and `provider` are immutable.

The gardenlet stand-in is one thread: on a new Shoot it adds the `gardener` finalizer, schedules it on a
seed and sets `status` (`technicalID`, `uid`, `gardener`, `seedName`, conditions `APIServerAvailable`,
`ControlPlaneHealthy`, `EveryNodeReady`, `SystemComponentsHealthy`), then moves `status.lastOperation`
{type Create, state Processing, progress 0..99} to Succeeded (100, conditions True, an advertised address)
over `--create-seconds` (default 30: Gardener's ~30 min scaled 1:60; 0 for benchmarks). A spec change of a
Succeeded Shoot runs a Reconcile operation (a third of the create time). A deleted Shoot (which keeps its
finalizer) runs a Delete operation over `--delete-seconds` (default 60) and then disappears. Per Shoot, an
operation can be told to fail (state `Failed`, or `Error`, which is retried once the outcome is set back to
succeed, as the gardenlet retries) or to hang (Processing forever, progress below 100).

`adminkubeconfig` answers a kubeconfig (bearer token, plain HTTP) for a second stand-in, the "shoot": one
`kube_apiserver.ApiServer` per Shoot, started in this process on the first request once the Shoot has an
advertised address, and stopped when the Shoot is gone.

Test-only endpoints (same token):
- `POST /test/outcomes` `{"outcome": "succeed"|"fail"|"hang", "operation": "Create"|"Delete", "name",
  "namespace", "selector", "state": "Failed"|"Error", "description", "codes"}`: the latest rule matching a
  Shoot (by name, namespace and label selector; all optional) decides how its operations end ("Create"
  also covers Reconcile); it may be set before the Shoot exists. `GET` lists them, `DELETE` forgets them.
- `GET /test/clusters`: the running "shoot" servers `[{"namespace", "name", "server"}]`.
- `GET /test/audit`: every write so far, as in the Kubernetes stand-in.

Simplifications: no CloudProfiles, Seeds, Projects or Secrets as objects (any `garden-<name>` namespace is a
project named `<name>`, the seed is fixed); most of the Shoot spec is stored unvalidated; a binding's secret
is not looked up; bindings carry no finalizers; no dual approval of deletions; the kubeconfig credential does
not expire (its `expirationTimestamp` is reported, not enforced); progress grows linearly, in steps of 5.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import heapq
import json
import re
import secrets
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qs, urlsplit

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling stand-in, also when imported by path

import kube_apiserver as kube

T = TypeVar("T")
CREATE_SECONDS = 30.0
DELETE_SECONDS = 60.0
TICK = 0.05
PROGRESS_STEP = 5
STEP_SLACK = 0.001  # a step's timer fires this much after it, so rounding never finds it not yet due
MAX_EXPIRATION = 24 * 3600  # gardener-apiserver --shoot-admin-kubeconfig-max-expiration default
DEFAULT_EXPIRATION = 3600  # SetDefaults_AdminKubeconfigRequestSpec
MIN_EXPIRATION = 600  # ValidateKubeconfigRequest: "may not specify a duration less than 10 minutes"
MAX_UINT32 = 2**32 - 1
PROJECT_NAME_LIMIT = 21  # plugin/pkg/shoot/validator: len(project + shoot name) <= 21
FINALIZER = "gardener"
CONFIRM_DELETION = "confirmation.gardener.cloud/deletion"
TRUE_VALUES = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool, as CheckIfDeletionIsConfirmed
SEED = "aws-standin"
IDENTITY = {"id": "standin", "name": "gardenlet-standin", "version": "v1.120.0-standin"}
AUTHENTICATION = "authentication.gardener.cloud/v1alpha1"
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NOT_DNS_LABEL = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character"
)
DEFAULT_FAILURE = (
    'Flow "Shoot cluster reconciliation" encountered task errors: [task "Waiting until shoot infrastructure '
    'has been reconciled" failed: quota exceeded for the requested machines (stand-in)]'
)

SHOOTS = kube.Resource("core.gardener.cloud", "v1beta1", "Shoot", "shoots")
SECRET_BINDINGS = kube.Resource("core.gardener.cloud", "v1beta1", "SecretBinding", "secretbindings")
CREDENTIALS_BINDINGS = kube.Resource(
    "security.gardener.cloud", "v1alpha1", "CredentialsBinding", "credentialsbindings"
)
RESOURCES = [SHOOTS, SECRET_BINDINGS, CREDENTIALS_BINDINGS]
BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
CONDITIONAL = (SHOOTS, CREDENTIALS_BINDINGS)  # AllowUnconditionalUpdate() is false in their strategies
BINDING_FIELDS = (("secretBindingName", SECRET_BINDINGS), ("credentialsBindingName", CREDENTIALS_BINDINGS))
# The shoot health conditions, with the reason the care controller reports when each is healthy.
CONDITIONS = {
    "APIServerAvailable": "HealthzRequestSucceeded",
    "ControlPlaneHealthy": "ControlPlaneRunning",
    "EveryNodeReady": "EveryNodeReady",
    "SystemComponentsHealthy": "SystemComponentsRunning",
}
PROCESSING_STEPS = (  # a description for each progress range, so a waiting client has something to show
    (0, "Reconciliation of Shoot cluster initialized."),
    (10, "Waiting until shoot infrastructure has been reconciled"),
    (40, "Waiting until the Kubernetes API server is ready"),
    (60, "Waiting until the shoot worker nodes have been reconciled"),
    (85, "Waiting until all shoot system components are healthy"),
)

Cause = tuple[str, str]


def log(message: str) -> None:
    print(f"gardener-apiserver: {message}", file=sys.stderr, flush=True)


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def forbidden(resource: kube.Resource, name: str, reason: str) -> kube.ApiError:
    """What `admission.NewForbidden` answers: `<plural>.<group> "<name>" is forbidden: <reason>`."""
    return kube.ApiError(
        403,
        "Forbidden",
        f'{resource.qualified} "{name}" is forbidden: {reason}',
        {"name": name, "group": resource.group, "kind": resource.plural},
    )


def project_of(namespace: str) -> str:
    """The project a namespace belongs to; other namespaces do not exist here (NamespaceLifecycle: 404)."""
    if not namespace.startswith("garden-") or len(namespace) == len("garden-"):
        raise kube.ApiError(
            404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
        )
    return namespace.removeprefix("garden-")


def at_least_134(version: str) -> bool:
    match = re.match(r"^v?(\d+)\.(\d+)", version)
    return match is not None and (int(match[1]), int(match[2])) >= (1, 34)


# --- validation ---------------------------------------------------------------------------------------------


def shoot_problems(shoot: dict[str, Any]) -> list[Cause]:
    """`ValidateShoot`: the fields a Shoot cannot do without, and the binding rule."""
    name = str(shoot["metadata"].get("name"))
    spec: dict[str, Any] = shoot["spec"] if isinstance(shoot.get("spec"), dict) else {}
    problems: list[Cause] = []
    if len(name) > 63 or not DNS1123_LABEL.match(name):
        problems.append(("metadata.name", f'Invalid value: "{name}": {NOT_DNS_LABEL}'))
    if "--" in name:
        problems.append(
            ("metadata.name", f'Invalid value: "{name}": name may not contain two consecutive hyphens')
        )
    version = str(dig(spec, "kubernetes", "version") or "")
    if version and at_least_134(version) and spec.get("cloudProfileName"):
        problems.append(
            (
                "spec.cloudProfileName",
                "Forbidden: for Kubernetes version >= 1.34, cloudProfileName field is no longer supported, "
                "use spec.cloudProfile.name instead",
            )
        )
    if not (dig(spec, "cloudProfile", "name") or spec.get("cloudProfileName")):
        problems.append(("spec.cloudProfile.name", "Required value: must specify a cloud profile"))
    if not version:
        problems.append(("spec.kubernetes.version", "Required value: kubernetes version must not be empty"))
    if not spec.get("region"):
        problems.append(("spec.region", "Required value: must specify a region"))
    if not dig(spec, "provider", "type"):
        problems.append(("spec.provider.type", "Required value: must specify a provider type"))
    workers = dig(spec, "provider", "workers") or []
    problems += worker_problems(workers if isinstance(workers, list) else [])
    if workers and not isinstance(spec.get("networking"), dict):
        problems.append(
            ("spec.networking", "Required value: networking should not be nil for a Shoot with workers")
        )
    elif workers and not dig(spec, "networking", "type"):
        problems.append(("spec.networking.type", "Required value: networking type must be provided"))
    return problems + binding_name_problems(spec, bool(workers), version)


def worker_problems(workers: list[Any]) -> list[Cause]:
    problems: list[Cause] = []
    for index, worker in enumerate(workers):
        path = f"spec.provider.workers[{index}]"
        worker = worker if isinstance(worker, dict) else {}
        if not worker.get("name"):
            problems.append((f"{path}.name", "Required value: must specify a name"))
        if not dig(worker, "machine", "type"):
            problems.append((f"{path}.machine.type", "Required value: must specify a machine type"))
        minimum, maximum = worker.get("minimum", 0), worker.get("maximum", 0)
        if not isinstance(minimum, int) or not isinstance(maximum, int) or minimum < 0:
            problems.append(
                (f"{path}.minimum", f"Invalid value: {minimum}: minimum value must not be negative")
            )
        elif maximum < minimum:
            problems.append(
                (f"{path}.maximum", "Forbidden: maximum value must not be less than minimum value")
            )
    return problems


def binding_name_problems(spec: dict[str, Any], has_workers: bool, version: str) -> list[Cause]:
    """A Shoot with workers names exactly one binding; SecretBindings end with Kubernetes 1.34."""
    secret, credentials = spec.get("secretBindingName"), spec.get("credentialsBindingName")
    if not has_workers:
        return [
            (f"spec.{key}", "Forbidden: this field should not be set for workerless Shoot clusters")
            for key in ("secretBindingName", "credentialsBindingName")
            if spec.get(key)
        ]
    if not secret and not credentials:
        return [("spec.secretBindingName", "Required value: must be set when credentialsBindingName is not")]
    if secret and credentials:
        return [("spec.secretBindingName", "Forbidden: is incompatible with credentialsBindingName")]
    if secret and version and at_least_134(version):
        return [
            (
                "spec.secretBindingName",
                "Forbidden: for Kubernetes versions >= 1.34, secretBindingName field is no longer supported, "
                "use spec.credentialsBindingName instead",
            )
        ]
    return []


def shoot_create_problems(shoot: dict[str, Any], project: str) -> list[Cause]:
    """`ValidateFinalizersOnCreation` and the shoot validator's name length check on CREATE."""
    name = str(shoot["metadata"].get("name"))
    problems: list[Cause] = [
        (f"metadata.finalizers[{index}]", f'Forbidden: finalizer "{FINALIZER}" cannot be added on creation')
        for index, finalizer in enumerate(shoot["metadata"].get("finalizers") or [])
        if finalizer == FINALIZER
    ]
    if len(project + name) > PROJECT_NAME_LIMIT:
        problems.append(
            (
                "name",
                f'Invalid value: "{name}": the length of the shoot name and the project name must not exceed '
                f"{PROJECT_NAME_LIMIT} characters (project: {project}; shoot: {name})",
            )
        )
    return problems


def immutable(path: str, new: Any, old: Any) -> list[Cause]:
    """`ValidateImmutableField`."""
    return [] if new == old else [(path, f"Invalid value: {json.dumps(new)}: field is immutable")]


def shoot_update_problems(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    """`ValidateShootSpecUpdate`: nothing changes once deletion started; region, provider type, networking
    type and the SecretBinding are immutable; a CredentialsBinding cannot be unset."""
    new_spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    if old["metadata"].get("deletionTimestamp") and new_spec != old_spec:
        changed = sorted(k for k in set(new_spec) | set(old_spec) if new_spec.get(k) != old_spec.get(k))
        reason = (
            f"Forbidden: cannot update shoot spec if deletion timestamp is set. Requested changes: {changed}"
        )
        return [("spec", reason)]
    problems = immutable("spec.region", new_spec.get("region"), old_spec.get("region"))
    problems += immutable(
        "spec.provider.type", dig(new_spec, "provider", "type"), dig(old_spec, "provider", "type")
    )
    if dig(old_spec, "networking", "type"):
        problems += immutable(
            "spec.networking.type", dig(new_spec, "networking", "type"), dig(old_spec, "networking", "type")
        )
    if old_spec.get("credentialsBindingName") and not new_spec.get("credentialsBindingName"):
        problems.append(("spec.credentialsBindingName", "Forbidden: the field cannot be unset"))
    migrating = old_spec.get("secretBindingName") and not new_spec.get("secretBindingName")
    if not (migrating and new_spec.get("credentialsBindingName")):
        problems += immutable(
            "spec.secretBindingName", new_spec.get("secretBindingName"), old_spec.get("secretBindingName")
        )
    return problems


def binding_problems(
    resource: kube.Resource, binding: dict[str, Any], old: dict[str, Any] | None
) -> list[Cause]:
    """`ValidateSecretBinding(Update)` and `ValidateCredentialsBinding(Update)`."""
    problems: list[Cause] = []
    reference = "secretRef" if resource is SECRET_BINDINGS else "credentialsRef"
    if not dig(binding, reference, "name"):
        problems.append((f"{reference}.name", "Required value: must provide a name"))
    if resource is CREDENTIALS_BINDINGS:
        if not dig(binding, reference, "namespace"):
            problems.append((f"{reference}.namespace", "Required value: must provide a namespace"))
        kind = dig(binding, reference, "kind")
        if kind not in ("Secret", "WorkloadIdentity", "InternalSecret"):
            problems.append(
                (
                    f"{reference}.kind",
                    f'Unsupported value: "{kind}": supported values: "Secret", '
                    '"WorkloadIdentity", "InternalSecret"',
                )
            )
        if not dig(binding, "provider", "type"):
            problems.append(("provider.type", "Required value: must specify a provider type"))
    if old is not None:
        for key in (reference, "quotas", "provider"):
            if resource is CREDENTIALS_BINDINGS or key != "provider" or old.get("provider") is not None:
                problems += immutable(key, binding.get(key), old.get(key))
    return problems


# --- the store ----------------------------------------------------------------------------------------------


class GardenStore(kube.Store):
    """The Kubernetes stand-in's store with the Gardener API server's strategies and admission plugins."""

    def __init__(self) -> None:
        super().__init__()
        self.written: set[tuple[str, str]] = set()  # Shoots written since the gardenlet last took them

    def take_written(self) -> set[tuple[str, str]]:
        with self.changed:
            written, self.written = self.written, set()
            return written

    def _prepared(
        self,
        resource: kube.Resource,
        namespace: str,
        body: dict[str, Any],
        old: dict[str, Any] | None,
        name: str | None = None,
    ) -> dict[str, Any]:
        obj = super()._prepared(resource, namespace, body, old, name)
        project = project_of(namespace)
        if resource is SHOOTS:
            self._admit_shoot(obj, old, project)
        else:
            problems = binding_problems(resource, obj, old)
            if problems:
                raise kube.invalid(resource, obj["metadata"]["name"], problems)
        return obj

    def _admit_shoot(self, shoot: dict[str, Any], old: dict[str, Any] | None, project: str) -> None:
        """The shoot strategy (status and deletion stay as they were: only the gardenlet and DELETE change
        them), its validation (422), then the reference manager (403)."""
        metadata = shoot["metadata"]
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            metadata.pop(key, None)
            if old is not None and key in old["metadata"]:
                metadata[key] = old["metadata"][key]
        shoot.pop("status", None)
        if old is not None and "status" in old:
            shoot["status"] = copy.deepcopy(old["status"])
        problems = shoot_problems(shoot)
        problems += (
            shoot_create_problems(shoot, project) if old is None else shoot_update_problems(shoot, old)
        )
        if problems:
            raise kube.invalid(SHOOTS, metadata["name"], problems)
        old_spec = (old or {}).get("spec") or {}
        for key, binding in BINDING_FIELDS:
            wanted = shoot["spec"].get(key)
            with self.changed:
                missing = (
                    wanted and wanted != old_spec.get(key) and not self._exists(binding, metadata, wanted)
                )
            if missing:
                reason = f'{binding.kind.lower()}.{binding.group} "{wanted}" not found'
                raise forbidden(SHOOTS, metadata["name"], reason)

    def _exists(self, resource: kube.Resource, metadata: dict[str, Any], name: str) -> bool:
        return (resource, metadata["namespace"], name) in self.objects

    def update(
        self,
        verb: str,
        resource: kube.Resource,
        namespace: str,
        name: str,
        manager: str,
        change: Any,
    ) -> dict[str, Any]:
        """A PUT without a resourceVersion is refused where the strategy disallows unconditional updates."""
        wanted = None if callable(change) else (change.get("metadata") or {}).get("resourceVersion")
        if resource in CONDITIONAL and not callable(change) and not wanted:
            with self.changed:
                if (resource, namespace, name) not in self.objects:
                    raise kube.not_found(resource, name)
            cause = "Invalid value: 0x0: must be specified for an update"
            raise kube.ApiError(
                422,
                "Invalid",
                f'{resource.kind}.{resource.group} "{name}" is invalid: metadata.resourceVersion: {cause}',
                {
                    "name": name,
                    "group": resource.group,
                    "kind": resource.kind,
                    "causes": [
                        {"reason": "FieldValueInvalid", "message": cause, "field": "metadata.resourceVersion"}
                    ],
                },
            )
        return super().update(verb, resource, namespace, name, manager, change)

    def _commit(
        self,
        verb: str,
        resource: kube.Resource,
        namespace: str,
        name: str,
        manager: str,
        old: dict[str, Any] | None,
        stored: kube.Stored | None,
    ) -> dict[str, Any] | None:
        """Shoot generations: 1 on create, one more when the spec changes or deletion starts. Every Shoot
        written is noted for the gardenlet, which looks at those (and at the ones whose time came)."""
        if resource is SHOOTS:
            self.written.add((namespace, name))
        if resource is SHOOTS and stored is not None:
            metadata = stored.obj["metadata"]
            if old is None:
                metadata["generation"] = 1
            elif old.get("spec") != stored.obj.get("spec") or (
                metadata.get("deletionTimestamp") and not old["metadata"].get("deletionTimestamp")
            ):
                metadata["generation"] = int(old["metadata"].get("generation") or 1) + 1
        return super()._commit(verb, resource, namespace, name, manager, old, stored)

    def delete(
        self, resource: kube.Resource, namespace: str, name: str, manager: str, options: dict[str, Any]
    ) -> dict[str, Any]:
        """Deleting a Shoot needs the confirmation annotation (403 otherwise); with the gardenlet's finalizer
        it only marks the Shoot (deletionTimestamp) and answers it, as the generic registry does."""
        if resource is not SHOOTS:
            return super().delete(resource, namespace, name, manager, options)
        with self.changed:
            stored = self.objects.get((resource, namespace, name))
            if stored is None:
                raise kube.not_found(resource, name)
            annotations = stored.obj["metadata"].get("annotations") or {}
            if annotations.get(CONFIRM_DELETION) not in TRUE_VALUES:
                raise forbidden(SHOOTS, name, f'must have a "{CONFIRM_DELETION}" annotation to delete')
            if not stored.obj["metadata"].get("finalizers"):
                return super().delete(resource, namespace, name, manager, options)
            if stored.obj["metadata"].get("deletionTimestamp"):
                return stored.rendered()
            marked = copy.deepcopy(stored.obj)
            marked["metadata"].update(deletionTimestamp=now_text(), deletionGracePeriodSeconds=0)
            result = self._commit(
                "delete",
                resource,
                namespace,
                name,
                manager,
                stored.rendered(),
                kube.Stored(marked, stored.owners),
            )
        assert result is not None
        return result

    def write_status(
        self,
        namespace: str,
        name: str,
        busy: Callable[[dict[str, Any]], bool],
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
    ) -> bool:
        """The gardenlet's write: when `busy` says the Shoot has something to do, `change` gets a copy and
        answers the new Shoot, or None to remove it (its finalizer released). Answers whether it changed."""
        with self.changed:
            stored = self.objects.get((SHOOTS, namespace, name))
            if stored is None or not busy(stored.obj):
                return False
            new = change(copy.deepcopy(stored.obj))
            if new == stored.obj:
                return False
            kept = None if new is None else kube.Stored(new, stored.owners)
            self._commit("gardenlet", SHOOTS, namespace, name, "gardenlet", stored.rendered(), kept)
            return True

    def read_shoot(self, namespace: str, name: str, read: Callable[[dict[str, Any]], T]) -> T | None:
        """`read` of the stored Shoot (not a copy: it must not change it), None when there is none."""
        with self.changed:
            stored = self.objects.get((SHOOTS, namespace, name))
            return None if stored is None else read(stored.obj)

    def shoot_gone(self, namespace: str, name: str) -> bool:
        with self.changed:
            return (SHOOTS, namespace, name) not in self.objects

    def shoot_keys(self) -> list[tuple[str, str]]:
        with self.changed:
            return [(ns, name) for (resource, ns, name) in self.objects if resource is SHOOTS]


# --- how operations end -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How the operations of the Shoots a rule matches end."""

    outcome: str = "succeed"
    operation: str = "Create"
    name: str | None = None
    namespace: str | None = None
    selector: str = ""
    state: str = "Failed"
    description: str = DEFAULT_FAILURE
    codes: list[str] = field(default_factory=lambda: ["ERR_INFRA_QUOTA_EXCEEDED"])
    matches_labels: Callable[[dict[str, Any]], bool] = field(default=lambda _: True, repr=False)

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "outcome": ("succeed", "fail", "hang"),
        "operation": ("Create", "Delete"),
        "state": ("Failed", "Error"),
    }

    @classmethod
    def parse(cls, body: Any) -> Outcome:
        """A rule from a test's JSON body; a bad one is a 400 naming the field."""
        if not isinstance(body, dict):
            raise kube.ApiError(400, "BadRequest", "an outcome rule is a JSON object")
        known = {"outcome", "operation", "name", "namespace", "selector", "state", "description", "codes"}
        for key, value in body.items():
            if key not in known:
                raise kube.ApiError(400, "BadRequest", f"unknown field {key!r} in the outcome rule")
            allowed = cls.CHOICES.get(key)
            if allowed and value not in allowed:
                raise kube.ApiError(400, "BadRequest", f"{key} must be one of {', '.join(allowed)}")
            if key == "codes" and not (isinstance(value, list) and all(isinstance(c, str) for c in value)):
                raise kube.ApiError(400, "BadRequest", "codes must be a list of strings")
            if key not in cls.CHOICES and key != "codes" and not isinstance(value, str):
                raise kube.ApiError(400, "BadRequest", f"{key} must be a string")
        rule = cls(**body)
        rule.matches_labels = kube.compile_selector(rule.selector)
        return rule

    def applies(self, shoot: dict[str, Any], operation: str) -> bool:
        metadata = shoot["metadata"]
        return (
            self.operation == ("Delete" if operation == "Delete" else "Create")
            and self.name in (None, metadata["name"])
            and self.namespace in (None, metadata["namespace"])
            and self.matches_labels(shoot)
        )

    def shown(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "matches_labels"}


class Outcomes:
    """The rules tests set; the latest matching rule wins, and operations succeed when none matches."""

    def __init__(self) -> None:
        self.rules: list[Outcome] = []
        self.lock = threading.Lock()
        self.version = 0  # one more at each change: the gardenlet then looks at every Shoot again

    def add(self, rule: Outcome) -> None:
        with self.lock:
            self.rules.append(rule)
            self.version += 1

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
            self.version += 1

    def listed(self) -> list[dict[str, Any]]:
        with self.lock:
            return [rule.shown() for rule in self.rules]

    def find(self, shoot: dict[str, Any], operation: str) -> Outcome:
        with self.lock:
            rules = list(reversed(self.rules))
        return next((rule for rule in rules if rule.applies(shoot, operation)), Outcome())


# --- the "shoot" clusters -----------------------------------------------------------------------------------


class ShootApiServer(kube.ApiServer):
    """The Kubernetes stand-in of one Shoot. Stopping it also ends its open (keep-alive) connections, so a
    client of a deleted cluster fails as it would against a real one."""

    def __init__(self, token: str) -> None:
        super().__init__(0, token)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        connection.setblocking(True)  # the listening socket is not (ShootClusters)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Handler.setup explains
        with self.connections_lock:
            self.connections.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


@dataclass
class ShootCluster:
    server: ShootApiServer
    token: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


class ShootClusters:
    """One Kubernetes stand-in per Shoot, started on the first kubeconfig request, stopped when it is gone.
    One thread accepts the connections of all of them, each request then served on a thread of its own as
    each server's `serve_forever` would: a `serve_forever` per Shoot polls ten times a second, and a thousand
    Shoots kept a thousand threads waking for nothing (a fifth of a core, in the process that also plays
    Gardener)."""

    def __init__(self) -> None:
        self.running: dict[tuple[str, str], ShootCluster] = {}
        self.lock = threading.Lock()  # also held while the acceptor hands a connection to its server
        self.selector = selectors.DefaultSelector()
        self.acceptor: threading.Thread | None = None

    def ensure(self, namespace: str, name: str) -> ShootCluster:
        with self.lock:
            cluster = self.running.get((namespace, name))
            if cluster is None:
                token = secrets.token_urlsafe(24)
                cluster = ShootCluster(ShootApiServer(token), token)
                # never blocks the acceptor (holding the lock): a connection gone before its accept, or a
                # server closed since its select, makes accept fail, and the failure is dropped
                cluster.server.socket.setblocking(False)
                self.selector.register(cluster.server.socket, selectors.EVENT_READ, cluster.server)
                self.running[(namespace, name)] = cluster
                if self.acceptor is None:
                    self.acceptor = threading.Thread(target=self._accept, name="shoot-clusters", daemon=True)
                    self.acceptor.start()
            return cluster

    def _accept(self) -> None:
        while True:
            for key, _ in self.selector.select(timeout=0.5):
                with self.lock:
                    server: ShootApiServer = key.data
                    if server.socket.fileno() >= 0:  # not stopped meanwhile
                        server._handle_request_noblock()  # type: ignore[attr-defined]

    def stop(self, namespace: str, name: str) -> None:
        with self.lock:
            cluster = self.running.pop((namespace, name), None)
            if cluster is not None:
                self.selector.unregister(cluster.server.socket)
        if cluster is not None:
            threading.Thread(target=cluster.server.server_close, daemon=True).start()

    def stop_all(self) -> None:
        with self.lock:
            clusters = list(self.running.values())
            self.running.clear()
            for cluster in clusters:
                self.selector.unregister(cluster.server.socket)
        for cluster in clusters:
            cluster.server.server_close()

    def listed(self) -> list[dict[str, str]]:
        with self.lock:
            return [
                {"namespace": ns, "name": name, "server": c.url} for (ns, name), c in self.running.items()
            ]


# --- the gardenlet ------------------------------------------------------------------------------------------


def operation(kind: str, state: str, progress: int, description: str) -> dict[str, Any]:
    return {
        "type": kind,
        "state": state,
        "progress": progress,
        "description": description,
        "lastUpdateTime": now_text(),
    }


def condition(kind: str, healthy: bool) -> dict[str, Any]:
    """A health condition: Unknown as `InitConditionWithClock` leaves it, or True once the cluster is up."""
    stamp = now_text()
    if not healthy:
        reason = "ConditionInitialized"
        message = "The condition has been initialized but its semantic check has not been performed yet."
    else:
        reason, message = CONDITIONS[kind], "All checks passed (stand-in)."
    return {
        "type": kind,
        "status": "True" if healthy else "Unknown",
        "lastTransitionTime": stamp,
        "lastUpdateTime": stamp,
        "reason": reason,
        "message": message,
    }


def progress_at(elapsed: float, seconds: float) -> int:
    """Progress of an operation that takes `seconds`, in steps of 5 as flow tasks finish (about 20 status
    writes an operation, also with thousands of Shoots); 99 once its time is up but it has not ended."""
    if elapsed >= seconds:
        return 99
    return int(100 * elapsed / seconds) // PROGRESS_STEP * PROGRESS_STEP


def processing_description(kind: str, progress: int) -> str:
    if kind == "Delete":
        return "Deletion of Shoot cluster in progress."
    return [text for start, text in PROCESSING_STEPS if progress >= start][-1]


class Gardenlet:
    """Drives every Shoot's status the way the gardenlet and the scheduler do, on its own thread."""

    def __init__(
        self,
        store: GardenStore,
        clusters: ShootClusters,
        outcomes: Outcomes,
        create_seconds: float,
        delete_seconds: float,
        tick: float = TICK,
    ) -> None:
        self.store, self.clusters, self.outcomes = store, clusters, outcomes
        self.seconds = {"Create": create_seconds, "Reconcile": create_seconds / 3, "Delete": delete_seconds}
        self.tick = tick
        self.started: dict[str, float] = {}  # Shoot uid → when its current operation began (monotonic)
        self.timers: list[
            tuple[float, str, str]
        ] = []  # (when, namespace, name): a Processing Shoot's next step
        self.scheduled: dict[tuple[str, str], float] = {}  # the latest timer of each Shoot
        self.rules_seen = -1  # the outcomes' version last looked at
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="gardenlet", daemon=True)

    def run(self) -> None:
        """As the gardenlet's controllers: a Shoot is looked at when it was written, and when the step it is
        processing is due (its requeue), not in a pass over every Shoot each time anything changed (with a
        thousand Shoots that pass was most of this process's work); every Shoot when the outcomes changed."""
        while not self.stopping.is_set():
            if not self.reconcile_due():
                with self.store.changed:
                    if not self.store.written:
                        self.store.changed.wait(self._sleep())

    def _sleep(self) -> float:
        if not self.timers:
            return self.tick
        return max(0.0, min(self.tick, self.timers[0][0] - time.monotonic()))

    def reconcile_due(self) -> bool:
        """The Shoots written since the last look and those whose next step is due; every Shoot when the
        outcomes changed. Answers whether anything changed."""
        keys = self.store.take_written()
        if self.outcomes.version != self.rules_seen:
            self.rules_seen = self.outcomes.version
            keys.update(self.store.shoot_keys())
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            due, namespace, name = heapq.heappop(self.timers)
            if self.scheduled.get((namespace, name)) == due:
                del self.scheduled[(namespace, name)]
            keys.add((namespace, name))
        changed = False
        for namespace, name in sorted(keys):
            changed = self._reconcile(namespace, name) or changed
        return changed

    def _reconcile(self, namespace: str, name: str) -> bool:
        changed = self.store.write_status(namespace, name, self.busy, self.step)
        if changed and self.store.shoot_gone(namespace, name):
            self.clusters.stop(namespace, name)
            return True
        due = self.store.read_shoot(namespace, name, self.next_step_at)
        if due is not None and self.scheduled.get((namespace, name)) != due:
            self.scheduled[(namespace, name)] = due
            heapq.heappush(self.timers, (due, namespace, name))
        return changed

    def stop(self) -> None:
        self.stopping.set()
        with self.store.changed:
            self.store.changed.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout=5)

    def reconcile_all(self) -> bool:
        """One pass over every Shoot; answers whether anything changed."""
        changed = False
        for namespace, name in self.store.shoot_keys():
            if self.store.write_status(namespace, name, self.busy, self.step):
                changed = True
                if self.store.shoot_gone(namespace, name):
                    self.clusters.stop(namespace, name)
        return changed

    def next_step_at(self, shoot: dict[str, Any]) -> float | None:
        """When `busy` turns true by time alone (monotonic): the next progress step of the operation the
        Shoot is processing, or its end; None when only a write or a changed outcome can make it busy."""
        current = (shoot.get("status") or {}).get("lastOperation") or {}
        began = self.started.get(shoot["metadata"]["uid"])
        if current.get("state") != "Processing" or began is None:
            return None
        seconds = self.seconds.get(current["type"], 0.0)
        progress = int(current.get("progress") or 0)
        if progress >= 99:
            return None  # hanging: its end already came
        return began + min(seconds, seconds * (progress + PROGRESS_STEP) / 100) + STEP_SLACK

    def busy(self, shoot: dict[str, Any]) -> bool:
        """Whether `step` would change the Shoot: a cheap test, so a pass copies no settled Shoot."""
        metadata, status = shoot["metadata"], shoot.get("status") or {}
        current = status.get("lastOperation") or {}
        if metadata.get("deletionTimestamp") and current.get("type") != "Delete":
            return True
        if current.get("state") == "Failed":
            return False
        if current.get("state") == "Succeeded":
            return bool(metadata.get("generation") != status.get("observedGeneration"))
        if current.get("state") != "Processing" or metadata["uid"] not in self.started:
            return True
        seconds = self.seconds.get(current["type"], 0.0)
        elapsed = time.monotonic() - self.started[metadata["uid"]]
        if elapsed < seconds:
            return progress_at(elapsed, seconds) > int(current.get("progress") or 0)
        return (
            self._outcome(shoot, current["type"]).outcome != "hang" or int(current.get("progress") or 0) < 99
        )

    def step(self, shoot: dict[str, Any]) -> dict[str, Any] | None:
        """The Shoot after one step, or None when it is gone."""
        metadata, status = shoot["metadata"], shoot.get("status") or {}
        current = status.get("lastOperation") or {}
        if metadata.get("deletionTimestamp"):
            retry = current.get("state") == "Error" and self._outcome(shoot, "Delete").outcome == "succeed"
            if current.get("type") != "Delete" or retry:
                return self._begin(shoot, "Delete")
        elif FINALIZER not in (metadata.get("finalizers") or []) or not current:
            return self._schedule(shoot)
        elif current["state"] == "Succeeded" and metadata.get("generation") != status.get(
            "observedGeneration"
        ):
            return self._begin(shoot, "Reconcile")
        elif current["state"] == "Error" and self._outcome(shoot, current["type"]).outcome == "succeed":
            return self._begin(shoot, current["type"])
        if current.get("state") != "Processing":
            return shoot
        result = self._advance(shoot, current)
        if result is None:
            self.started.pop(metadata["uid"], None)
        return result

    def _outcome(self, shoot: dict[str, Any], kind: str) -> Outcome:
        return self.outcomes.find(shoot, kind)

    def _schedule(self, shoot: dict[str, Any]) -> dict[str, Any]:
        """Scheduling (spec.seedName, a new generation) and the first reconciliation's status."""
        metadata, spec = shoot["metadata"], shoot.setdefault("spec", {})
        metadata["finalizers"] = [*(metadata.get("finalizers") or []), FINALIZER]
        generation = int(metadata.get("generation") or 1) + (0 if spec.get("seedName") else 1)
        spec.setdefault("seedName", SEED)
        project = project_of(metadata["namespace"])
        shoot["status"] = {
            "gardener": dict(IDENTITY),
            "hibernated": False,
            "technicalID": f"shoot--{project}--{metadata['name']}",
            "uid": metadata["uid"],
            "seedName": spec["seedName"],
            "observedGeneration": generation,
            "conditions": [condition(kind, healthy=False) for kind in CONDITIONS],
            "lastOperation": operation("Create", "Processing", 0, processing_description("Create", 0)),
        }
        self.started[metadata["uid"]] = time.monotonic()
        return shoot

    def _begin(self, shoot: dict[str, Any], kind: str) -> dict[str, Any]:
        status = shoot.setdefault("status", {})
        status["observedGeneration"] = shoot["metadata"].get("generation")
        status["lastOperation"] = operation(kind, "Processing", 0, processing_description(kind, 0))
        status.pop("lastErrors", None)
        self.started[shoot["metadata"]["uid"]] = time.monotonic()
        return shoot

    def _advance(self, shoot: dict[str, Any], current: dict[str, Any]) -> dict[str, Any] | None:
        kind = current["type"]
        rule = self._outcome(shoot, kind)
        seconds = self.seconds.get(kind, 0.0)
        elapsed = time.monotonic() - self.started.setdefault(shoot["metadata"]["uid"], time.monotonic())
        if elapsed >= seconds and rule.outcome == "fail":
            return self._failed(shoot, current, rule)
        if elapsed >= seconds and rule.outcome == "succeed":
            return None if kind == "Delete" else self._succeeded(shoot, kind)
        progress = progress_at(elapsed, seconds)
        if progress > int(current.get("progress") or 0):
            shoot["status"]["lastOperation"] = operation(
                kind, "Processing", progress, processing_description(kind, progress)
            )
        return shoot

    @staticmethod
    def _succeeded(shoot: dict[str, Any], kind: str) -> dict[str, Any]:
        status = shoot["status"]
        status["lastOperation"] = operation(
            kind, "Succeeded", 100, "Shoot cluster has been successfully reconciled."
        )
        status["conditions"] = [condition(c, healthy=True) for c in CONDITIONS]
        metadata = shoot["metadata"]
        url = (
            f"https://api.{metadata['name']}.{project_of(metadata['namespace'])}.shoot.standin.gardener.cloud"
        )
        status["advertisedAddresses"] = [{"name": "external", "url": url}]
        return shoot

    @staticmethod
    def _failed(shoot: dict[str, Any], current: dict[str, Any], rule: Outcome) -> dict[str, Any]:
        status = shoot["status"]
        status["lastOperation"] = operation(
            current["type"], rule.state, int(current.get("progress") or 0), rule.description
        )
        status["lastErrors"] = [
            {"description": rule.description, "codes": list(rule.codes), "lastUpdateTime": now_text()}
        ]
        return shoot


# --- HTTP ---------------------------------------------------------------------------------------------------

ROUTE = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<namespace>[^/]+)/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<subresource>[^/]+))?)?/?$"
)


def discovery(group: str, version: str) -> dict[str, Any]:
    listed = kube.discovery(RESOURCES, group, version)
    if (group, version) == (SHOOTS.group, SHOOTS.version):
        listed["resources"].append(
            {
                "name": "shoots/adminkubeconfig",
                "singularName": "",
                "namespaced": True,
                "group": "authentication.gardener.cloud",
                "version": "v1alpha1",
                "kind": "AdminKubeconfigRequest",
                "verbs": ["create"],
            }
        )
    return listed


def group_list() -> dict[str, Any]:
    groups = sorted({(r.group, r.version) for r in RESOURCES})
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


def kubeconfig_for(namespace: str, name: str, cluster: ShootCluster) -> str:
    """A kubeconfig as the subresource builds it: cluster `<namespace>--<name>-external`, user
    `<namespace>--<name>` (here with a bearer token instead of a client certificate)."""
    auth = f"{namespace}--{name}"
    context = f"{auth}-external"
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": cluster.url}}],
            "users": [{"name": auth, "user": {"token": cluster.token}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": auth}}],
            "current-context": context,
        }
    )


def kubeconfig_invalid(name: str, path: str, message: str) -> kube.ApiError:
    """`apierrors.NewInvalid(AdminKubeconfigRequest.authentication.gardener.cloud, name, errs)`."""
    return kube.ApiError(
        422,
        "Invalid",
        f'AdminKubeconfigRequest.authentication.gardener.cloud "{name}" is invalid: {path}: {message}',
        {
            "name": name,
            "group": "authentication.gardener.cloud",
            "kind": "AdminKubeconfigRequest",
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": path}],
        },
    )


def requested_expiration(body: dict[str, Any], maximum: int) -> int:
    """`ValidateKubeconfigRequest`: at least 10 minutes, at most 2^32-1 seconds; then capped at the server's
    maximum (`KubeconfigREST.Create`). The default is one hour."""
    if body.get("apiVersion") not in (None, AUTHENTICATION) or body.get("kind") not in (
        None,
        "AdminKubeconfigRequest",
    ):
        raise kube.ApiError(
            400, "BadRequest", f"expected {AUTHENTICATION} AdminKubeconfigRequest, got {body.get('kind')}"
        )
    seconds = dig(body, "spec", "expirationSeconds")
    seconds = DEFAULT_EXPIRATION if seconds is None else seconds
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise kube.ApiError(400, "BadRequest", "spec.expirationSeconds must be an integer")
    if seconds < MIN_EXPIRATION:
        raise kubeconfig_invalid(
            "",
            "spec.expirationSeconds",
            f"Invalid value: {seconds}: may not specify a duration less than 10 minutes",
        )
    if seconds > MAX_UINT32:
        raise kubeconfig_invalid(
            "", "spec.expirationSeconds", f"Too long: may not be more than {MAX_UINT32} bytes"
        )
    return min(seconds, maximum)


class Handler(kube.Handler):
    server: GardenerApiServer  # type: ignore[assignment]

    def setup(self) -> None:
        """No Nagle delay: a response goes out as two writes (head, body), and on a kept-alive connection the
        second one would wait for the client's delayed ACK, ~40 ms a request."""
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log(f"{self.command} {self.path} → {args[1] if len(args) > 1 else ''}")

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = self._body()
        if self.server.token and self.headers.get("Authorization") != f"Bearer {self.server.token}":
            raise kube.ApiError(401, "Unauthorized", "Unauthorized")
        path = url.path.rstrip("/") or "/"
        static = {
            "/version": {"major": "1", "minor": "31", "gitVersion": "v1.120.0-standin"},
            "/apis": group_list(),
            **{f"/apis/{r.group}/{r.version}": discovery(r.group, r.version) for r in RESOURCES},
        }
        if self.command == "GET" and path in static:
            self._send(200, static[path])
            return
        if path.startswith("/test/"):
            self._test_hook(path, raw)
            return
        match = ROUTE.match(url.path)
        resource = BY_PATH.get((match["group"], match["version"], match["plural"])) if match else None
        if match is None or resource is None:
            raise kube.ApiError(
                404, "NotFound", f"the server could not find the requested resource ({url.path})"
            )
        namespace, name = match["namespace"], match["name"]
        if match["subresource"]:
            self._subresource(resource, namespace, name, match["subresource"], raw)
            return
        manager = query.get("fieldManager") or (self.headers.get("User-Agent") or "unknown").split("/")[0]
        self._dispatch(resource, namespace, name, manager, query, raw)

    def _subresource(
        self, resource: kube.Resource, namespace: str, name: str, subresource: str, raw: bytes
    ) -> None:
        if resource is not SHOOTS or subresource != "adminkubeconfig":
            raise kube.ApiError(
                404, "NotFound", f"the server could not find the requested resource ({subresource})"
            )
        if self.command != "POST":
            raise kube.ApiError(
                405, "MethodNotAllowed", f"{self.command} is not supported on adminkubeconfig"
            )
        self._send(201, self.server.admin_kubeconfig(namespace, name, self._json_body(raw) if raw else {}))

    def _test_hook(self, path: str, raw: bytes) -> None:  # type: ignore[override]
        server = self.server
        if self.command == "GET" and path == "/test/audit":
            with server.store.changed:
                self._send(200, list(server.store.audit))
        elif self.command == "GET" and path == "/test/clusters":
            self._send(200, server.clusters.listed())
        elif self.command == "GET" and path == "/test/outcomes":
            self._send(200, server.outcomes.listed())
        elif self.command == "POST" and path == "/test/outcomes":
            rule = Outcome.parse(self._json(raw))
            server.outcomes.add(rule)
            self._send(201, rule.shown())
        elif self.command == "DELETE" and path == "/test/outcomes":
            server.outcomes.clear()
            self._send(200, [])
        else:
            raise kube.ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")


class GardenerApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        port: int = 0,
        token: str | None = None,
        *,
        create_seconds: float = CREATE_SECONDS,
        delete_seconds: float = DELETE_SECONDS,
        max_expiration: int = MAX_EXPIRATION,
        tick: float = TICK,
    ) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.token = token
        self.max_expiration = max_expiration
        self.store = GardenStore()
        self.clusters = ShootClusters()
        self.outcomes = Outcomes()
        self.gardenlet = Gardenlet(
            self.store, self.clusters, self.outcomes, create_seconds, delete_seconds, tick
        )

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GardenerApiServer:
        """Serve and reconcile on background threads (in-process use)."""
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        self.gardenlet.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def server_close(self) -> None:
        self.gardenlet.stop()
        self.clusters.stop_all()
        self.store.end_watches()
        super().server_close()

    def kubeconfig(self) -> dict[str, Any]:
        """A kubeconfig for the garden cluster, as a client of the Gardener API loads it."""
        user = {"token": self.token} if self.token else {}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "garden", "cluster": {"server": self.url}}],
            "users": [{"name": "garden", "user": user}],
            "contexts": [{"name": "garden", "context": {"cluster": "garden", "user": "garden"}}],
            "current-context": "garden",
        }

    def admin_kubeconfig(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """`shoots/{name}/adminkubeconfig`: the request is validated before the Shoot is read; a Shoot without
        an advertised kube-apiserver address (not yet up) is refused with Gardener's 422."""
        seconds = requested_expiration(body, self.max_expiration)
        shoot = self.store.get(SHOOTS, namespace, name)
        if not dig(shoot, "status", "advertisedAddresses"):
            raise kubeconfig_invalid(
                name,
                "status.status",
                "Invalid value: null: no suitable advertised address for kube-apiserver found in "
                ".status.advertisedAddresses",
            )
        cluster = self.clusters.ensure(namespace, name)
        expires = datetime.now(UTC) + timedelta(seconds=seconds)
        return {
            "apiVersion": AUTHENTICATION,
            "kind": "AdminKubeconfigRequest",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": {"expirationSeconds": seconds},
            "status": {
                "kubeconfig": base64.b64encode(kubeconfig_for(namespace, name, cluster).encode()).decode(),
                "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--token", help="the bearer token every request must carry")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for this server here (mode 0600)")
    parser.add_argument(
        "--create-seconds", type=float, default=CREATE_SECONDS, help="how long a Create takes"
    )
    parser.add_argument(
        "--delete-seconds", type=float, default=DELETE_SECONDS, help="how long a Delete takes"
    )
    parser.add_argument(
        "--max-expiration", type=int, default=MAX_EXPIRATION, help="cap on an admin kubeconfig's validity (s)"
    )
    args = parser.parse_args()
    if min(args.create_seconds, args.delete_seconds) < 0:
        parser.error("--create-seconds and --delete-seconds must not be negative")
    return args


def main() -> None:
    """Serve until interrupted; the kubeconfig is written and the port printed once the socket listens."""
    args = arguments()
    server = GardenerApiServer(
        args.port,
        args.token,
        create_seconds=args.create_seconds,
        delete_seconds=args.delete_seconds,
        max_expiration=args.max_expiration,
    )
    if args.kubeconfig:
        args.kubeconfig.touch(mode=0o600)
        args.kubeconfig.write_text(yaml.safe_dump(server.kubeconfig()))
    server.gardenlet.thread.start()
    print(server.port, flush=True)
    log(f"serving on {server.url}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
