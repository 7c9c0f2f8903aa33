"""A stand-in for a self-hosted daprd, for integration tests on machines where daprd cannot run.

Run it as its own process, as daprd would be run next to an app:

    python fake_daprd.py --port P --resources-path DIR [--app-id ID] [--api-token T] [--no-hot-reload]
                         [--rescan-interval SECONDS] [--init-delay SECONDS]

What it mirrors of daprd (v1.18.3, self-hosted, `--resources-path DIR`); the source named for each rule is in
dapr/dapr at that tag:
- Loading: only `.yaml`/`.yml` files directly in DIR; each file split on `\\n---`; a document is kept only
  if `apiVersion == "dapr.io/v1alpha1"` and `kind == "Component"`; documents that do not parse are skipped
  (a truncated file looks like a deletion).
- Duplicates (pkg/internal/loader/disk/disk.go `filterManifests`): the same component name twice is an error
  of the loader, "duplicate definition of Component name ...", fatal at start (pkg/runtime/runtime.go
  `loadComponents`) and on a hot reload (pkg/runtime/hotreload/loader/disk/resource.go `run`: "failed to load
  resources from disk"): the stand-in exits with code 1.
- Scopes (same `filterManifests`): a component whose `scopes` is non-empty and does not name `--app-id` is
  not loaded at all; one that goes out of scope is closed like a deleted one.
- Hot reload (on by default; `--no-hot-reload` turns it off): daprd watches DIR (pkg/runtime/hotreload/
  loader/disk/disk.go) and reconciles what it read against what it holds (pkg/runtime/hotreload/differ): the
  stand-in re-reads DIR every `--rescan-interval` seconds (default 0.2: the issue measured daprd noticing a
  change after about 200 ms), never on a request. A component is closed and re-initialised only when its
  spec, auth or scopes changed (differ.AreSame ignores labels and annotations); a removed file unloads its
  components. Without hot reload DIR is read at start only, and SIGHUP reloads everything from scratch, as a
  restart would.
- Initialisation (pkg/runtime/processor/components.go `processComponents`): components are initialised one at
  a time from one queue, secret stores first; each takes `--init-delay` seconds (default 0.3) before it is
  listed by `/v1.0/metadata`; while it re-initialises, a changed component is not listed (the reconciler
  closes the old one first: pkg/runtime/hotreload/reconciler/components.go `update`).
- Unknown type or version: daprd's registries know only what it was built with; the stand-in knows the
  components-contrib metadata shipped in rrm (rrm.dapr.catalog). Anything else fails at creation with the
  registry's words ("couldn't find state store state.x/v1", "couldn't find binding NAME (TYPE/VERSION)",
  "incorrect type TYPE" for an unknown category) and is not listed.
- Init errors (`processComponents`): logged as daprd logs them ("Failed to init component ...", then "Error
  processing component, daprd will exit gracefully: process component NAME error: [INIT_COMPONENT_FAILURE]:
  ..."); with `spec.ignoreErrors` false daprd then shuts down (exit code 1 here); with `ignoreErrors: true`
  ("Ignoring error processing component: ...") the component is left out and daprd runs on; it is tried
  again only when its manifest changes (daprd's 60 s backup reconcile, which also retries it, is not
  modelled).
- Secrets: `secretstores.local.file` reads its `secretsFile` (JSON; `multiValued`, `nestedSeparator`)
  once, when it is initialised. A component with `secretKeyRef` items resolves them at its own
  initialisation against the store named in `auth.secretStore`; while that store is not loaded it stays
  pending (Dapr defers it) and is not listed. Rotating a value therefore reaches a component only when the
  store is re-initialised (its spec changed) and the component is re-initialised too.
- `GET /v1.0/metadata` answers `{"id", "runtimeVersion", "enabledFeatures", "components": [{"name",
  "type", "version", "capabilities": []}]}` (pkg/api/http/metadata.go), never metadata values nor init
  errors; with `--api-token` (or `DAPR_API_TOKEN`) every `/v1.0/` endpoint except `/v1.0/healthz` needs the
  `dapr-api-token` header.

What it does not mirror: no component is really initialised (nothing connects anywhere; only local.file
stores do their file read), no other resource kinds (Configuration, Resiliency, Subscription, HTTPEndpoint),
no namespaces, no building-block APIs, no capabilities, and no per-component init timeout.

Test-only (daprd has no such endpoints; it only logs): `GET /test/resolved/<component>` answers 200
`{"name", "metadata": {item: resolved value}, "errors"}` for a loaded component (what its metadata resolved
to at its last initialisation), else 404 with the reason; `GET /test/init-errors` answers `{name: message}`
for every component whose last initialisation failed and that is still in DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from rrm.dapr import catalog

API_VERSION = "dapr.io/v1alpha1"
KIND = "Component"
LOCAL_FILE_STORE = "secretstores.local.file"
RUNTIME_VERSION = "1.18.3"
RESCAN_INTERVAL = 0.2
# A component that connects somewhere (a state store, a broker) takes a few hundred milliseconds to
# initialise; local ones (bindings.http, in-memory) take milliseconds. 0.3 s errs on the slow side.
INIT_DELAY = 0.3
# What daprd's registries say when they do not know a type (pkg/components/<category>/registry.go `Create`).
REGISTRY_NOUNS = {
    "state": "state store",
    "pubsub": "message bus",
    "secretstores": "secret store",
    "configuration": "configuration store",
    "lock": "lock store",
    "crypto": "crypto provider",
    "conversation": "conversation",
}
CATEGORIES = {*REGISTRY_NOUNS, "bindings", "middleware"}


def log(message: str, level: str = "info") -> None:
    """One line in daprd's text format: `time="..." level=info msg="..."` (UTC, microseconds)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    text = message.replace("\\", "\\\\").replace('"', '\\"')
    print(f'time="{now}" level={level} msg="{text}"', file=sys.stderr, flush=True)


def fatal(message: str) -> None:
    """daprd shuts down; so does the stand-in, at once and with a non-zero code."""
    log(message, "fatal")
    os._exit(1)


def read_components(directory: Path) -> list[dict[str, Any]]:
    """The Component documents daprd would load from `directory`, in file-name order."""
    manifests: list[dict[str, Any]] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix not in (".yaml", ".yml"):
            continue
        try:
            text = path.read_text()
        except OSError as exc:  # removed between listing and reading
            log(f"skipping {path.name}: {exc}")
            continue
        for chunk in text.split("\n---"):
            try:
                doc = yaml.safe_load(chunk)
            except yaml.YAMLError as exc:
                log(f"skipping a document of {path.name}: {exc}")
                continue
            if isinstance(doc, dict) and doc.get("apiVersion") == API_VERSION and doc.get("kind") == KIND:
                manifests.append(doc)
    return manifests


def spec_of(manifest: dict[str, Any]) -> dict[str, Any]:
    spec = manifest.get("spec")
    return spec if isinstance(spec, dict) else {}


def identity(manifest: dict[str, Any]) -> str:
    """What Dapr compares to decide whether a component changed: spec, auth and scopes."""
    return json.dumps(
        {k: manifest.get(k) for k in ("spec", "auth", "scopes")}, sort_keys=True, separators=(",", ":")
    )


def flatten(data: dict[str, Any], separator: str, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{separator}{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, separator, name))
        else:
            flat[name] = str(value)
    return flat


@dataclass
class LocalFileStore:
    """`secretstores.local.file` as initialised: the JSON read once, then served from memory."""

    secrets: dict[str, dict[str, str]]

    @classmethod
    def initialise(cls, metadata: dict[str, Any]) -> LocalFileStore:
        path = metadata.get("secretsFile")
        if not path:
            raise ValueError("missing local secrets file in metadata")
        data = json.loads(Path(str(path)).read_text())
        if not isinstance(data, dict):
            raise ValueError("secrets file is not a JSON object")
        if str(metadata.get("multiValued", "false")).lower() == "true":
            secrets = {
                name: flatten(value, str(metadata.get("nestedSeparator", ":")))
                if isinstance(value, dict)
                else {name: str(value)}
                for name, value in data.items()
            }
        else:
            flat = flatten(data, str(metadata.get("nestedSeparator", ":")))
            secrets = {name: {name: value} for name, value in flat.items()}
        return cls(secrets)

    def get(self, name: str, key: str) -> str:
        if name not in self.secrets:
            raise KeyError(f"secret {name!r} not found")
        if key not in self.secrets[name]:
            raise KeyError(f"key {key!r} not found in secret {name!r}")
        return self.secrets[name][key]


def log_name(manifest: dict[str, Any]) -> str:
    """How daprd names a component in its logs (utils.ComponentLogName): `name (type/version)`."""
    spec = spec_of(manifest)
    return f"{manifest['metadata']['name']} ({spec.get('type')}/{spec.get('version')})"


def in_scope(manifest: dict[str, Any], app_id: str) -> bool:
    """pkg/internal/loader/disk/disk.go `filterManifests`: no scopes, or scopes naming this app."""
    scopes = manifest.get("scopes") or []
    return not scopes or app_id in scopes


def known_category(manifest: dict[str, Any]) -> bool:
    """processComponentAndDependents refuses a type of no category before any registry is asked."""
    return str(spec_of(manifest).get("type", "")).split(".", 1)[0] in CATEGORIES


def creation_error(manifest: dict[str, Any]) -> str | None:
    """Why daprd's registry cannot create this type/version, in its words; None when it can."""
    spec = spec_of(manifest)
    component_type, version = str(spec.get("type", "")), str(spec.get("version", ""))
    if catalog.component_schema(component_type, version) is not None:
        return None
    category = component_type.split(".", 1)[0]
    if category == "bindings":  # pkg/runtime/processor/binding/binding.go `Init`
        return f"couldn't find binding {log_name(manifest)}"
    noun = REGISTRY_NOUNS.get(category, "HTTP middleware")
    return (
        f"[CREATE_COMPONENT_FAILURE]: initialization error occurred for {log_name(manifest)}: "
        f"couldn't find {noun} {component_type}/{version}"
    )


@dataclass
class Loaded:
    manifest: dict[str, Any]
    identity: str
    resolved: dict[str, Any]
    store: LocalFileStore | None = None
    errors: list[str] = field(default_factory=list)


class Sidecar:
    """The components a daprd would hold after seeing the resources directory."""

    def __init__(self, directory: Path, app_id: str = "app", init_delay: float = 0.0) -> None:
        self.directory = directory
        self.app_id = app_id
        self.init_delay = init_delay
        self.lock = threading.Lock()  # guards the state below; never held while a component initialises
        self.queue = threading.Lock()  # daprd initialises components one at a time
        self.loaded: dict[str, Loaded] = {}
        self.pending: dict[str, str] = {}
        self.init_errors: dict[str, str] = {}
        self.failed: dict[str, str] = {}  # name → identity whose initialisation failed

    def reload(self, from_scratch: bool = False) -> None:
        """Read the directory once and bring what is loaded in line with it (one hot-reload pass)."""
        with self.queue:
            wanted = self._wanted()
            with self.lock:
                if from_scratch:
                    self.loaded.clear()
                    self.failed.clear()
                for name in [n for n in self.loaded if n not in wanted]:
                    log(f"component {log_name(self.loaded[name].manifest)} closed (deleted or out of scope)")
                    del self.loaded[name]
                self.init_errors = {n: e for n, e in self.init_errors.items() if n in wanted}
                self.failed = {n: i for n, i in self.failed.items() if n in wanted}
                self.pending = {}
            stores_first = sorted(wanted.values(), key=lambda m: spec_of(m).get("type") != LOCAL_FILE_STORE)
            for manifest in stores_first:
                self._reconcile(manifest)

    def _wanted(self) -> dict[str, dict[str, Any]]:
        """The in-scope components by name; a name defined twice is fatal, as for daprd's disk loader."""
        wanted: dict[str, dict[str, Any]] = {}
        for manifest in read_components(self.directory):
            name = (manifest.get("metadata") or {}).get("name")
            if not isinstance(name, str) or not name:
                log("skipping a component without metadata.name")
                continue
            if name in wanted:
                fatal(
                    "failed to load resources from disk: duplicate definition of Component name "
                    f"{log_name(manifest)} with existing {log_name(wanted[name])}"
                )
            wanted[name] = manifest
        return {name: m for name, m in wanted.items() if in_scope(m, self.app_id)}

    def _reconcile(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        with self.lock:
            current = self.loaded.get(name)
            if current is not None and current.identity == identity(manifest):
                return
            if self.failed.get(name) == identity(manifest):  # daprd retries only a changed manifest
                return
            self.failed.pop(name, None)
            if current is not None:
                log(f"Closing existing Component to reload: {log_name(current.manifest)}")
                del self.loaded[name]
        store: LocalFileStore | None = None
        if any(isinstance(i, dict) and "secretKeyRef" in i for i in self._items(manifest)):
            store_name = str((manifest.get("auth") or {}).get("secretStore"))
            with self.lock:
                store = self.loaded[store_name].store if store_name in self.loaded else None
                if store is None:
                    self.pending[name] = f"waiting for secret store {store_name!r}"
                    return
        if not known_category(manifest):
            self._failed(manifest, f"incorrect type {spec_of(manifest).get('type')}")
            return
        try:
            refused = creation_error(manifest)
            if refused is not None:
                raise LookupError(refused)
            time.sleep(self.init_delay)
            loaded = self._initialise(manifest, store)
        except Exception as exc:
            log(f"Failed to init component {log_name(manifest)}: {exc}", "error")
            prefix = f"[INIT_COMPONENT_FAILURE]: initialization error occurred for {log_name(manifest)}"
            self._failed(manifest, f"{prefix}: {exc}")
            return
        log(f"Component loaded: {log_name(manifest)}")
        with self.lock:
            self.loaded[name] = loaded
            self.init_errors.pop(name, None)

    def _failed(self, manifest: dict[str, Any], error: str) -> None:
        """processor/components.go `processComponents`: daprd exits unless the component ignores errors."""
        name = manifest["metadata"]["name"]
        message = f"process component {name} error: {error}"
        with self.lock:
            self.init_errors[name] = message
            self.failed[name] = identity(manifest)
        if spec_of(manifest).get("ignoreErrors") is True:
            log(f"Ignoring error processing component: {message}", "error")
            return
        log(f"Error processing component, daprd will exit gracefully: {message}", "warning")
        fatal(f"Fatal error from runtime: {message}")

    @staticmethod
    def _items(manifest: dict[str, Any]) -> list[Any]:
        return list(spec_of(manifest).get("metadata") or [])

    def _initialise(self, manifest: dict[str, Any], store: LocalFileStore | None) -> Loaded:
        resolved: dict[str, Any] = {}
        errors: list[str] = []
        for item in self._items(manifest):
            ref = item.get("secretKeyRef")
            if ref and store is not None:
                try:
                    resolved[item["name"]] = store.get(ref["name"], ref.get("key") or ref["name"])
                except KeyError as exc:  # daprd logs and initialises the component without the value
                    errors.append(str(exc))
                    log(f"error getting secret for {manifest['metadata']['name']}: {exc}")
            elif "envRef" in item:
                resolved[item["name"]] = os.environ.get(str(item["envRef"]), "")
            else:
                resolved[item["name"]] = item.get("value")
        is_store = spec_of(manifest).get("type") == LOCAL_FILE_STORE
        own_store = LocalFileStore.initialise(resolved) if is_store else None
        return Loaded(manifest, identity(manifest), resolved, own_store, errors)

    def metadata_components(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {
                    "name": name,
                    "type": spec_of(loaded.manifest).get("type", ""),
                    "version": spec_of(loaded.manifest).get("version", ""),
                    "capabilities": [],
                }
                for name, loaded in sorted(self.loaded.items())
            ]

    def resolved(self, name: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if name in self.loaded:
                loaded = self.loaded[name]
                return 200, {"name": name, "metadata": loaded.resolved, "errors": loaded.errors}
            reason = self.init_errors.get(name) or self.pending.get(name, "not loaded")
            return 404, {"name": name, "reason": reason}

    def errors(self) -> dict[str, str]:
        with self.lock:
            return dict(self.init_errors)


def make_handler(sidecar: Sidecar, api_token: str | None, hot_reload: bool) -> type:
    class Handler(BaseHTTPRequestHandler):
        # daprd's HTTP API is Go's net/http server, which speaks HTTP/1.1 and keeps connections alive by
        # default (Go 1.3 release notes, Server.SetKeepAlivesEnabled); http.server's default is HTTP/1.0,
        # a new connection per question
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path == "/v1.0/healthz":
                self._send(204, None)
                return
            token_missing = api_token and self.headers.get("dapr-api-token") != api_token
            if self.path.startswith("/v1.0/") and token_missing:
                self._send(401, {"errorCode": "ERR_API_TOKEN", "message": "invalid api token"})
                return
            if self.path == "/v1.0/metadata":
                self._send(
                    200,
                    {
                        "id": sidecar.app_id,
                        "runtimeVersion": RUNTIME_VERSION,
                        "enabledFeatures": ["HotReload"] if hot_reload else [],
                        "components": sidecar.metadata_components(),
                    },
                )
            elif self.path.startswith("/test/resolved/"):
                self._send(*sidecar.resolved(self.path.removeprefix("/test/resolved/")))
            elif self.path == "/test/init-errors":
                self._send(200, sidecar.errors())
            else:
                self._send(404, {"errorCode": "ERR_NOT_FOUND", "message": self.path})

        def _send(self, status: int, body: Any) -> None:
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """daprd logs API calls only with --enable-api-logging; so the stand-in's log shows loading."""

    return Handler


def watch(sidecar: Sidecar, interval: float) -> None:
    """daprd's hot reload: notice a change of the directory within `interval` and reconcile it."""
    while True:
        time.sleep(interval)
        sidecar.reload()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--resources-path", type=Path, required=True)
    parser.add_argument("--app-id", default="app")
    parser.add_argument("--api-token", default=os.environ.get("DAPR_API_TOKEN"))
    parser.add_argument("--no-hot-reload", dest="hot_reload", action="store_false")
    parser.add_argument("--rescan-interval", type=float, default=RESCAN_INTERVAL)
    parser.add_argument("--init-delay", type=float, default=INIT_DELAY)
    args = parser.parse_args(argv)
    if not args.resources_path.is_dir():
        fatal(f"resources path {args.resources_path} does not exist")
    sidecar = Sidecar(args.resources_path, args.app_id, args.init_delay)
    sidecar.reload()
    handler = make_handler(sidecar, args.api_token, args.hot_reload)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=sidecar.reload, args=(True,)).start())
    if args.hot_reload:
        threading.Thread(target=watch, args=(sidecar, args.rescan_interval), daemon=True).start()
    log(f"listening on 127.0.0.1:{args.port}, resources {args.resources_path}, hot reload {args.hot_reload}")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
