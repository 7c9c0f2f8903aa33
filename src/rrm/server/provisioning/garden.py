"""The Gardener API (the garden cluster's project namespace) as the gardener backend and the account pool use
it: the official `kubernetes` client, with Gardener's answers turned into `RetryLater` (what may pass: a 5xx,
a timeout, a conflict, throttling) and `BackendFailure` (what will not: a refusal or an invalid object)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from rrm.core.bounded import load_yaml
from rrm.server.provisioning.backends.base import BackendFailure, RetryLater

REQUEST_TIMEOUT = (5.0, 30.0)
PERMANENT = {400, 403, 404, 405, 422}


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    kind: str
    plural: str


SHOOTS = Kind("core.gardener.cloud", "v1beta1", "Shoot", "shoots")
SECRET_BINDINGS = Kind("core.gardener.cloud", "v1beta1", "SecretBinding", "secretbindings")
CREDENTIALS_BINDINGS = Kind(
    "security.gardener.cloud", "v1alpha1", "CredentialsBinding", "credentialsbindings"
)
BINDING_KINDS = {k.kind: k for k in (SECRET_BINDINGS, CREDENTIALS_BINDINGS)}


class Conflict(Exception):
    """The object changed since it was read (409): read it again and decide again."""


class GardenError(Exception):
    """What Gardener answered, with its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def load_client(kubeconfig: Path, pool_size: int = 32) -> client.ApiClient:
    """An API client for the garden cluster; ValueError naming the file when it is not usable."""
    try:
        document = load_yaml(kubeconfig.read_text())
        configuration = client.Configuration()
        config.load_kube_config_from_dict(document, client_configuration=configuration)
    except (OSError, yaml.YAMLError, config.ConfigException, AttributeError, TypeError, KeyError) as exc:
        raise ValueError(f"--gardener-kubeconfig {kubeconfig}: not a usable kubeconfig: {exc}") from exc
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


class Garden:
    """One Gardener project namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.objects = client.CustomObjectsApi(api)

    @property
    def project(self) -> str:
        return self.namespace.removeprefix("garden-")

    def list(self, kind: Kind, selector: str = "") -> list[dict[str, Any]]:
        answer = self._call(
            lambda: self.objects.list_namespaced_custom_object(
                kind.group, kind.version, self.namespace, kind.plural, label_selector=selector,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )  # fmt: skip
        items: list[dict[str, Any]] = answer.get("items") or []
        return items

    def get(self, kind: Kind, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        answer: dict[str, Any] | None = self._named(self.objects.get_namespaced_custom_object, kind, name)
        return answer

    def create(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(
            lambda: self.objects.create_namespaced_custom_object(
                kind.group, kind.version, self.namespace, kind.plural, body, _request_timeout=REQUEST_TIMEOUT
            )
        )

    def replace(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        """PUT with the body's resourceVersion as precondition: Conflict when the object changed meanwhile."""
        name = body["metadata"]["name"]
        return self._call(
            lambda: self.objects.replace_namespaced_custom_object(
                kind.group, kind.version, self.namespace, kind.plural, name, body,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )  # fmt: skip

    def delete(self, kind: Kind, name: str) -> None:
        """DELETE; one already gone is fine."""
        self._named(self.objects.delete_namespaced_custom_object, kind, name)

    def _named(self, method: Callable[..., Any], kind: Kind, name: str) -> Any:
        """`method` (a get or delete of the named object) answered, or None when the object does not exist."""
        try:
            return self._call(
                lambda: method(
                    kind.group,
                    kind.version,
                    self.namespace,
                    kind.plural,
                    name,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            )
        except GardenError as exc:
            if exc.status == 404:
                return None
            raise

    def admin_kubeconfig(self, shoot: str, expiration_seconds: int) -> str:
        """`POST shoots/{name}/adminkubeconfig`: a kubeconfig for the Shoot's API server (text)."""
        body = {
            "apiVersion": "authentication.gardener.cloud/v1alpha1",
            "kind": "AdminKubeconfigRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        }
        group = f"/apis/{SHOOTS.group}/{SHOOTS.version}"
        path = f"{group}/namespaces/{self.namespace}/shoots/{shoot}/adminkubeconfig"
        request = self.api.param_serialize(
            "POST",
            path,
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )

        def post() -> dict[str, Any]:
            response = self.api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
            data = response.read()
            if response.status >= 300:
                raise ApiException(status=response.status, reason=response.reason, http_resp=response)
            answer: dict[str, Any] = json.loads(data)
            return answer

        answer = self._call(post)
        return base64.b64decode(answer["status"]["kubeconfig"]).decode()

    @staticmethod
    def _call(work: Callable[[], Any]) -> Any:
        try:
            return work()
        except ApiException as exc:
            message = _message(exc)
            if exc.status == 409 and "AlreadyExists" not in str(exc.body or ""):
                raise Conflict(message) from exc
            raise GardenError(int(exc.status or 0), message) from exc
        except Exception as exc:  # urllib3 connection errors, timeouts
            raise RetryLater(f"Gardener did not answer: {type(exc).__name__}: {exc}") from exc


def _message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return f"{exc.status} {message or exc.reason}"


def classify(exc: GardenError, doing: str) -> Exception:
    """A refusal is permanent, the rest may pass."""
    if exc.status in PERMANENT:
        return BackendFailure(f"{doing}: Gardener answered {exc}")
    return RetryLater(f"{doing}: Gardener answered {exc}")
