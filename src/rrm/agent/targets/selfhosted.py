"""Self-hosted daprd: `rrm-<name>.yaml` per component in its resources path, secrets in a local file store.

Native objects are keyed by where they live: `rrm-<name>.yaml` in the resources path,
`secrets/secrets-<h>.json` in STATE_DIR. daprd's local file store reads its file only at init, so new
secret revisions get a new store (`rrm-secrets-<h>` reading `secrets-<h>.json`) and every dependent
component is pointed at it through `auth.secretStore`; that changed spec is what makes daprd reload them.
The store's file is `rrm-secrets-<h>.store.yaml`: a component name cannot contain a dot, so no component's
file can be named so. Agents before that named it `rrm-rrm-secrets-<h>.yaml`; such a file is renamed onto
the new name, never written beside it, since daprd stops when two files define one component.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import yaml

from rrm.agent.atomic import TEMP_SUFFIX, fsync_dir, make_private_dir, remove_durably, write_atomic
from rrm.agent.config import AgentConfig, ConfigurationError
from rrm.agent.reload import run_reload_command
from rrm.agent.sidecar import SidecarClient
from rrm.agent.targets.base import ApplyOutcome, NativeChanges, NativeObject, Target, component_results
from rrm.agent.targets.yaml_files import DocumentMemo, dump_yaml, load_yaml
from rrm.core.canonical import sha256_hex
from rrm.core.names import dns1123_label_error
from rrm.core.resources import secret_refs
from rrm.wire.protocol import DeliveredSecret, DesiredState, SidecarReport

log = logging.getLogger(__name__)

API_VERSION = "dapr.io/v1alpha1"
FILE_PREFIX = "rrm-"
FILE_SUFFIX = ".yaml"
DAPR_SUFFIXES = (".yaml", ".yml")
STORE_PREFIX = "rrm-secrets-"
STORE_FILE_SUFFIX = ".store.yaml"
LEGACY_STORE_FILE_PREFIX = FILE_PREFIX + STORE_PREFIX
SECRETS_ID_PREFIX = "secrets/"
SECRETS_DIR = "secrets"
SECRETS_FILE_PREFIX = "secrets-"
SECRETS_FILE_SUFFIX = ".json"
COMPONENT_FILE_MODE = 0o644
SECRETS_FILE_MODE = 0o600


def secrets_tag(secrets: Iterable[DeliveredSecret]) -> str:
    """Changes with every secret revision, so each set of values gets its own store and file name."""
    return sha256_hex(sorted([s.name, s.revision] for s in secrets))[:10]


def component_file_id(name: str) -> str:
    return f"{FILE_PREFIX}{name}{FILE_SUFFIX}"


def store_file_id(store: str) -> str:
    return f"{store}{STORE_FILE_SUFFIX}"


def legacy_store_file_id(store: str) -> str:
    """The doubled-prefix name earlier agents gave a store's file."""
    return f"{FILE_PREFIX}{store}{FILE_SUFFIX}"


def store_name_of(object_id: str) -> str | None:
    """The secret store a file id holds, under its name or an earlier agent's; None for anything else."""
    if object_id.startswith(STORE_PREFIX) and object_id.endswith(STORE_FILE_SUFFIX):
        return object_id[: -len(STORE_FILE_SUFFIX)]
    if object_id.startswith(LEGACY_STORE_FILE_PREFIX) and object_id.endswith(FILE_SUFFIX):
        return object_id[len(FILE_PREFIX) : -len(FILE_SUFFIX)]
    return None


def component_name_of(object_id: str) -> str | None:
    """The component a file id holds, secret stores included; None for secrets files and foreign suffixes."""
    store = store_name_of(object_id)
    if store is not None:
        return store
    if object_id.startswith(FILE_PREFIX) and object_id.endswith(FILE_SUFFIX):
        return object_id[len(FILE_PREFIX) : -len(FILE_SUFFIX)]
    return None


def is_store_id(object_id: str) -> bool:
    return store_name_of(object_id) is not None


_encode = msgspec.json.Encoder().encode


def _copied(value: Any) -> Any:
    """A deep copy of JSON data (a manifest is), made in C: `copy.deepcopy` cost most of a render."""
    return msgspec.json.decode(msgspec.json.encode(value))


def component_document(manifest: Mapping[str, Any], secret_store: str | None) -> NativeObject:
    """The Component exactly as daprd reads it; `secret_store` is set as `auth.secretStore` when given."""
    spec = _copied(dict(manifest.get("spec") or {}))
    spec["metadata"] = spec.get("metadata") or []
    document: NativeObject = {
        "apiVersion": API_VERSION,
        "kind": "Component",
        "metadata": _copied(dict(manifest.get("metadata") or {})),
        "spec": spec,
    }
    auth = _copied(manifest.get("auth"))
    if secret_store is not None:
        auth = {**(auth or {}), "secretStore": secret_store}
    if auth:
        document["auth"] = auth
    if manifest.get("scopes"):
        document["scopes"] = _copied(manifest["scopes"])
    return document


def store_document(name: str, secrets_file: Path) -> NativeObject:
    return {
        "apiVersion": API_VERSION,
        "kind": "Component",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "rrm"}},
        "spec": {
            "type": "secretstores.local.file",
            "version": "v1",
            "metadata": [
                {"name": "secretsFile", "value": str(secrets_file)},
                {"name": "multiValued", "value": "true"},
            ],
        },
    }


@dataclass(frozen=True)
class _Component:
    """One manifest as rendered: its name, what makes it unwritable whatever is delivered with it, the
    secrets it references, and its file's document (shared between plans: nothing changes it)."""

    name: str
    problem: str | None
    refs: dict[str, set[str]]
    document: NativeObject


def _component(manifest: Mapping[str, Any], store: str | None) -> _Component:
    name = str((manifest.get("metadata") or {}).get("name", ""))
    problem = dns1123_label_error(name)
    if problem is None and name.startswith(STORE_PREFIX):
        problem = f"the prefix {STORE_PREFIX} is reserved for rrm's secret stores"
    refs = secret_refs(manifest)
    return _Component(name, problem, refs, component_document(manifest, store if refs else None))


@dataclass
class _Plan:
    """What `state` becomes on disk, plus the components that cannot be written and why."""

    objects: dict[str, NativeObject] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    store: str | None = None


class SelfHostedTarget(Target):
    name = "selfhosted"

    def __init__(
        self,
        resources_path: Path,
        state_dir: Path,
        reload_command: str | None = None,
        dapr_http_port: int | None = None,
        dapr_api_token: str | None = None,
    ) -> None:
        self.resources_path = resources_path.absolute()
        self.secrets_dir = (state_dir / SECRETS_DIR).absolute()
        self.reload_command = reload_command
        self.sidecar = SidecarClient(dapr_http_port, dapr_api_token) if dapr_http_port is not None else None
        self._documents = DocumentMemo()
        self._planned: tuple[DesiredState, _Plan] | None = None
        # the last plan's components by (compact encoding of the manifest, secret store): an update changes
        # one or two, so the others are not rendered again (equal encodings are equal content)
        self._components: dict[tuple[bytes, str | None], _Component] = {}

    @classmethod
    def from_config(cls, config: AgentConfig) -> SelfHostedTarget:
        if config.resources_path is None:
            raise ConfigurationError(
                "the selfhosted target needs --resources-path (daprd's --resources-path)"
            )
        return cls(
            config.resources_path,
            config.state_dir,
            reload_command=config.reload_command,
            dapr_http_port=config.dapr_http_port,
            dapr_api_token=config.dapr_api_token,
        )

    def prepare(self) -> None:
        self.resources_path.mkdir(parents=True, exist_ok=True)
        make_private_dir(self.secrets_dir)
        leftovers = [
            *self.resources_path.glob(f".{FILE_PREFIX}*{TEMP_SUFFIX}"),
            *self.secrets_dir.glob(f".*{TEMP_SUFFIX}"),
        ]
        for leftover in leftovers:
            remove_durably(leftover)
            log.info("event=removed-leftover path=%s", leftover)

    def render(self, state: DesiredState) -> dict[str, NativeObject]:
        return self._plan(state).objects

    def observe(self) -> dict[str, NativeObject]:
        """Every own file, read afresh. Scanned with `os.scandir` and plain string paths: `pathlib` objects
        per entry cost about half of an observe, which every reconcile makes twice."""
        objects: dict[str, NativeObject] = {}
        read: set[str] = set()
        for entry in _entries(self.resources_path):
            if entry.name.startswith(FILE_PREFIX) and entry.name.endswith(DAPR_SUFFIXES) and entry.is_file():
                objects[entry.name] = self._documents.read(entry.path)
                read.add(entry.path)
        self._documents.keep_only(read)
        for entry in _entries(self.secrets_dir):
            if entry.name.startswith(SECRETS_FILE_PREFIX) and entry.name.endswith(SECRETS_FILE_SUFFIX):
                objects[SECRETS_ID_PREFIX + entry.name] = _read_json(entry.path)
        return objects

    def apply(self, changes: NativeChanges, state: DesiredState, *, prune: bool) -> ApplyOutcome:
        plan = self._plan(state)
        failed = dict(plan.rejected)
        failed.update(self._conflicts(plan))
        writes = {**changes.create, **changes.update}
        changed = False

        def write(object_id: str) -> str | None:
            nonlocal changed
            try:
                self._write(object_id, writes[object_id])
            except OSError as exc:
                log.error("event=write-failed object=%s error=%s", object_id, exc)
                return f"could not write {object_id}: {exc}"
            changed = True
            return None

        store_error = failed.get(plan.store) if plan.store else None
        for object_id in sorted(i for i in writes if i.startswith(SECRETS_ID_PREFIX)):
            store_error = store_error or write(object_id)
        for object_id in sorted(i for i in writes if is_store_id(i)):
            store_error = store_error or write(object_id)
        for object_id, document in plan.objects.items():
            name = component_name_of(object_id)
            if name is None or is_store_id(object_id) or name in failed:
                continue
            if store_error and plan.store and document.get("auth", {}).get("secretStore") == plan.store:
                failed[name] = f"not written: secret store {plan.store} failed: {store_error}"
            elif object_id in writes:
                error = write(object_id)
                if error:
                    failed[name] = error

        if prune and self._prune(changes, failed, store_error):
            changed = True
        if changes.create or changes.update or (prune and changes.delete):
            log.info(
                "event=applied hash=%s created=%d updated=%d deleted=%d failed=%d",
                state.hash[:12],
                len(changes.create),
                len(changes.update),
                len(changes.delete) if prune else 0,
                len(failed),
            )
        reload = run_reload_command(self.reload_command) if changed and self.reload_command else None
        return ApplyOutcome(resources=component_results(state, failed), changed=changed, reload=reload)

    def _prune(self, changes: NativeChanges, failed: Mapping[str, str], store_error: str | None) -> bool:
        """Stale components first, then old stores and secrets files: those only once every update
        succeeded, since a component left at its old version may still use them (one that could not be
        created has no old version). True when anything was removed."""
        keep_stores = bool(store_error) or any(
            component_name_of(i) in failed for i in changes.update if not is_store_id(i)
        )
        removed = False
        for object_id in sorted(changes.delete, key=_deletion_order):
            if keep_stores and _deletion_order(object_id)[0] > 0:
                continue
            try:
                remove_durably(self._path_of(object_id))
            except OSError as exc:
                log.error("event=delete-failed object=%s error=%s", object_id, exc)
                continue
            removed = True
        return removed

    def component_name(self, object_id: str) -> str | None:
        return None if is_store_id(object_id) else component_name_of(object_id)

    async def sidecar_report(self) -> SidecarReport | None:
        return await self.sidecar.query() if self.sidecar is not None else None

    async def close(self) -> None:
        if self.sidecar is not None:
            await self.sidecar.aclose()

    def _plan(self, state: DesiredState) -> _Plan:
        """Planned once per state: a reconcile renders it, then applies it, and reconciles repeat it."""
        if self._planned is None or self._planned[0] is not state:
            self._planned = (state, self._plan_anew(state))
        return self._planned[1]

    def _plan_anew(self, state: DesiredState) -> _Plan:
        plan = _Plan()
        delivered = {s.name: s.data for s in state.secrets}
        if state.secrets:
            tag = secrets_tag(state.secrets)
            plan.store = STORE_PREFIX + tag
            secrets_file = f"secrets-{tag}.json"
            plan.objects[SECRETS_ID_PREFIX + secrets_file] = {s.name: dict(s.data) for s in state.secrets}
            plan.objects[store_file_id(plan.store)] = store_document(
                plan.store, self.secrets_dir / secrets_file
            )
        known, rendered = self._components, dict[tuple[bytes, str | None], _Component]()
        for manifest in state.components:
            key = (_encode(manifest), plan.store)
            component = known.get(key) or rendered.get(key) or _component(manifest, plan.store)
            rendered[key] = component
            problem = component.problem
            missing = [
                f"{s}/{k}"
                for s, keys in sorted(component.refs.items())
                for k in sorted(keys)
                if k not in delivered.get(s, {})
            ]
            if problem is None and missing:
                problem = "references secret keys that were not delivered: " + ", ".join(missing)
            if problem is not None:
                plan.rejected[component.name] = problem
                continue
            plan.objects[component_file_id(component.name)] = component.document
        self._components = rendered
        return plan

    def _conflicts(self, plan: _Plan) -> dict[str, str]:
        """Components rrm wants that a foreign file already defines: writing them would make daprd stop."""
        wanted = {name for name in map(component_name_of, plan.objects) if name is not None}
        conflicts: dict[str, str] = {}
        for entry in sorted(_entries(self.resources_path), key=lambda entry: entry.name):
            if entry.name.startswith(FILE_PREFIX) or not entry.name.endswith(DAPR_SUFFIXES):
                continue
            if not entry.is_file():
                continue
            path = Path(entry.path)
            for name in _component_names_in(path) & wanted:
                conflicts[name] = (
                    f"component {name} is already defined in {path}; not written (daprd refuses duplicates)"
                )
        return conflicts

    def _path_of(self, object_id: str) -> Path:
        if object_id.startswith(SECRETS_ID_PREFIX):
            return self.secrets_dir / object_id[len(SECRETS_ID_PREFIX) :]
        return self.resources_path / object_id

    def _write(self, object_id: str, document: NativeObject) -> None:
        if object_id.startswith(SECRETS_ID_PREFIX):
            write_atomic(self._path_of(object_id), json.dumps(document, indent=2).encode(), SECRETS_FILE_MODE)
            return
        store = store_name_of(object_id)
        if store is not None:
            self._rename_legacy_store_file(store, self._path_of(object_id))
        data = dump_yaml(document).encode()
        write_atomic(self._path_of(object_id), data, COMPONENT_FILE_MODE)
        self._documents.wrote(self._path_of(object_id), data, document)

    def _rename_legacy_store_file(self, store: str, path: Path) -> None:
        """Move an earlier agent's file of `store` onto `path` in one rename: writing the new file beside
        it would define the store twice, which daprd does not survive."""
        legacy = self.resources_path / legacy_store_file_id(store)
        try:
            os.replace(legacy, path)
        except FileNotFoundError:
            return
        fsync_dir(self.resources_path)
        log.info("event=renamed-store-file from=%s to=%s", legacy.name, path.name)


def _deletion_order(object_id: str) -> tuple[int, str]:
    """Components, then secret stores, then secrets files: nothing is removed while something uses it."""
    if object_id.startswith(SECRETS_ID_PREFIX):
        return 2, object_id
    return (1 if is_store_id(object_id) else 0), object_id


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of `directory`; none when it is missing or not a directory."""
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _read_json(path: str) -> NativeObject:
    try:
        with open(path, "rb") as file:
            document = json.loads(file.read())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _component_names_in(path: Path) -> set[str]:
    """Component names in a YAML file, split into documents the way daprd splits them (on `\\n---`)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return set()
    names = set()
    for chunk in text.split("\n---"):
        try:
            document = load_yaml(chunk)
        except yaml.YAMLError:
            continue
        if (
            isinstance(document, dict)
            and document.get("apiVersion") == API_VERSION
            and document.get("kind") == "Component"
            and isinstance(document.get("metadata"), dict)
        ):
            names.add(str(document["metadata"].get("name")))
    return names
