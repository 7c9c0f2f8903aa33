"""A stand-in for a self-hosted daprd, for integration tests on machines where daprd cannot run.

Run it as its own process, as daprd would be run next to an app:

    python fake_daprd.py --port P --resources-path DIR [--app-id ID] [--api-token T] [--no-hot-reload]

What it mirrors of daprd (1.18, self-hosted, `--resources-path DIR`):
- Loading: only `.yaml`/`.yml` files directly in DIR; each file split on `\\n---`; a document is kept only
  if `apiVersion == "dapr.io/v1alpha1"` and `kind == "Component"`; documents that do not parse are skipped
  (a truncated file looks like a deletion). The same component name twice is fatal: exit code 1.
- Hot reload (on by default; `--no-hot-reload` turns it off): the directory is re-read continuously. A
  component is closed and re-initialised only when its spec, auth or scopes changed (labels and
  annotations are ignored, as in Dapr); a removed file unloads its components. Without hot reload the
  directory is read at start only, and SIGHUP reloads everything from scratch, as a restart would.
- Secrets: `secretstores.local.file` reads its `secretsFile` (JSON; `multiValued`, `nestedSeparator`)
  once, when it is initialised. A component with `secretKeyRef` items resolves them at its own
  initialisation against the store named in `auth.secretStore`; while that store is not loaded it stays
  pending (Dapr defers it) and is not listed. Rotating a value therefore reaches a component only when the
  store is re-initialised (its spec changed) and the component is re-initialised too.
- A component that fails to initialise with `spec.ignoreErrors` false shuts daprd down (exit code 1);
  with `ignoreErrors: true` it is left unregistered.
- `GET /v1.0/metadata` answers `{"id", "runtimeVersion", "enabledFeatures", "components": [{"name",
  "type", "version", "capabilities": []}]}`, never metadata values; with `--api-token` (or
  `DAPR_API_TOKEN`) every `/v1.0/` endpoint except `/v1.0/healthz` needs the `dapr-api-token` header.

What it does not mirror: no component is really initialised (nothing connects anywhere; only local.file
stores do their file read), no other resource kinds (Configuration, Resiliency, Subscription, HTTPEndpoint),
no building-block APIs, no scopes filtering by app id, no capabilities.

Test-only: `GET /test/resolved/<component>` answers 200 `{"name", "metadata": {item: resolved value}}` for
a loaded component (what its metadata resolved to at its last initialisation), else 404 with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

API_VERSION = "dapr.io/v1alpha1"
KIND = "Component"
LOCAL_FILE_STORE = "secretstores.local.file"
RUNTIME_VERSION = "1.18.3"
RESCAN_SECONDS = 0.2


def log(message: str) -> None:
    print(f"fake-daprd: {message}", file=sys.stderr, flush=True)


def fatal(message: str) -> None:
    """daprd shuts down; so does the stand-in, at once and with a non-zero code."""
    log(f"FATAL {message}")
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


@dataclass
class Loaded:
    manifest: dict[str, Any]
    identity: str
    resolved: dict[str, Any]
    store: LocalFileStore | None = None
    errors: list[str] = field(default_factory=list)


class Sidecar:
    """The components a daprd would hold after seeing the resources directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lock = threading.Lock()
        self.loaded: dict[str, Loaded] = {}
        self.pending: dict[str, str] = {}

    def reload(self, from_scratch: bool = False) -> None:
        with self.lock:
            manifests = read_components(self.directory)
            wanted: dict[str, dict[str, Any]] = {}
            for manifest in manifests:
                name = (manifest.get("metadata") or {}).get("name")
                if not isinstance(name, str) or not name:
                    log("skipping a component without metadata.name")
                    continue
                if name in wanted:
                    fatal(f"duplicate definition of component name {name!r}")
                wanted[name] = manifest
            if from_scratch:
                self.loaded.clear()
            for name in [n for n in self.loaded if n not in wanted]:
                log(f"component {name} closed (deleted)")
                del self.loaded[name]
            self.pending = {}
            stores_first = sorted(wanted.values(), key=lambda m: spec_of(m).get("type") != LOCAL_FILE_STORE)
            for manifest in stores_first:
                self._reconcile(manifest)

    def _reconcile(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        current = self.loaded.get(name)
        if current is not None and current.identity == identity(manifest):
            return
        store: LocalFileStore | None = None
        if any(isinstance(i, dict) and "secretKeyRef" in i for i in self._items(manifest)):
            store_name = str((manifest.get("auth") or {}).get("secretStore"))
            store = self.loaded[store_name].store if store_name in self.loaded else None
            if store is None:
                self.pending[name] = f"waiting for secret store {store_name!r}"
                self.loaded.pop(name, None)
                return
        try:
            loaded = self._initialise(manifest, store)
        except Exception as exc:
            if spec_of(manifest).get("ignoreErrors") is True:
                log(f"component {name} failed to init, ignored: {exc}")
                self.loaded.pop(name, None)
                return
            fatal(f"component {name} failed to init: {exc}")
            return
        log(f"component {name} {'re-initialised' if current else 'loaded'} ({spec_of(manifest).get('type')})")
        self.loaded[name] = loaded

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
            return 404, {"name": name, "reason": self.pending.get(name, "not loaded")}


def make_handler(sidecar: Sidecar, app_id: str, api_token: str | None, hot_reload: bool) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/v1.0/healthz":
                self._send(204, None)
                return
            token_missing = api_token and self.headers.get("dapr-api-token") != api_token
            if self.path.startswith("/v1.0/") and token_missing:
                self._send(401, {"errorCode": "ERR_API_TOKEN", "message": "invalid api token"})
                return
            if hot_reload:
                sidecar.reload()
            if self.path == "/v1.0/metadata":
                self._send(
                    200,
                    {
                        "id": app_id,
                        "runtimeVersion": RUNTIME_VERSION,
                        "enabledFeatures": ["HotReload"] if hot_reload else [],
                        "components": sidecar.metadata_components(),
                    },
                )
            elif self.path.startswith("/test/resolved/"):
                self._send(*sidecar.resolved(self.path.removeprefix("/test/resolved/")))
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
            log(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}")

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--resources-path", type=Path, required=True)
    parser.add_argument("--app-id", default="app")
    parser.add_argument("--api-token", default=os.environ.get("DAPR_API_TOKEN"))
    parser.add_argument("--no-hot-reload", dest="hot_reload", action="store_false")
    args = parser.parse_args(argv)
    if not args.resources_path.is_dir():
        fatal(f"resources path {args.resources_path} does not exist")
    sidecar = Sidecar(args.resources_path)
    sidecar.reload()
    handler = make_handler(sidecar, args.app_id, args.api_token, args.hot_reload)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=sidecar.reload, args=(True,)).start())
    if args.hot_reload:
        watcher = threading.Event()

        def watch() -> None:
            while not watcher.wait(RESCAN_SECONDS):
                sidecar.reload()

        threading.Thread(target=watch, daemon=True).start()
    log(f"listening on 127.0.0.1:{args.port}, resources {args.resources_path}, hot reload {args.hot_reload}")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
