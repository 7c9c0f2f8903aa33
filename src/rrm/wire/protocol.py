"""The agent protocol (`/agent/v1/...`), defined once: msgspec Structs that the control plane and the agents
both decode, validate and encode with, and from which the API docs' schemas are made.

msgspec rather than pydantic or hand-written decoders of dataclasses: it decodes and validates a status report
about five times faster than pydantic and a desired state twice as fast as the standard library's `json`, at
under 1 MB of an agent's memory (BENCHMARKS.md, "The wire protocol").

Decoding is strict: each value must have the JSON type the protocol gives it (no "3" for 3, no `true` for 1);
keys the protocol does not know are ignored. A body the protocol does not allow raises `WireError`, which
names the field and never shows a value (a delivered secret's values, a pairing token, travel in these
bodies). Free text an agent reports is cut to `MAX_TEXT_LENGTH` characters when a Struct is made, by the
agent that sends it and again by the control plane that decodes it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar, cast, get_args

import msgspec
from msgspec.structs import force_setattr

from rrm.core.bounded import DecodeError, decode_json, field_name

RuntimeKind = Literal["selfhosted", "kubernetes", "kyma-managed", "kyma-standalone", "cloudfoundry"]
RUNTIME_KINDS: tuple[str, ...] = get_args(RuntimeKind)
ResourceState = Literal["applied", "failed", "pending"]
RESOURCE_STATES: tuple[str, ...] = get_args(ResourceState)
DriftChange = Literal["modified", "deleted", "created"]
DRIFT_CHANGES: tuple[str, ...] = get_args(DriftChange)
# StatusReport.heartbeat_interval lies in (0, MAX_HEARTBEAT_INTERVAL] seconds.
MAX_HEARTBEAT_INTERVAL = 3600
# Free text in a status report (messages, errors, command output) keeps at most this many characters.
MAX_TEXT_LENGTH = 1024
TRUNCATED_MARK = " [truncated]"
TRUNCATED_START_MARK = "[truncated] "

T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)
PublicKey = Annotated[str, msgspec.Meta(description="PEM-encoded Ed25519 public key made by the agent")]


def truncated(text: str) -> str:
    """`text` cut to `MAX_TEXT_LENGTH` characters, the mark included, when it is longer."""
    if len(text) <= MAX_TEXT_LENGTH:
        return text
    return text[: MAX_TEXT_LENGTH - len(TRUNCATED_MARK)] + TRUNCATED_MARK


def truncated_start(text: str) -> str:
    """`text` cut to `MAX_TEXT_LENGTH` characters keeping its end, the mark included: the last lines of a
    command's output say why it failed."""
    if len(text) <= MAX_TEXT_LENGTH:
        return text
    return TRUNCATED_START_MARK + text[len(text) - MAX_TEXT_LENGTH + len(TRUNCATED_START_MARK) :]


# --- what the agent sends -----------------------------------------------------------------------------------


class PairRequest(msgspec.Struct, frozen=True, kw_only=True):
    """First contact: a single-use pairing token plus the public half of the agent's own key pair."""

    token: Annotated[str, msgspec.Meta(min_length=1)]
    public_key: PublicKey
    agent_version: str = ""


class RotateRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The new key replaces the current one at once, if `proof` is the current key's signature over the
    challenge's nonce and the new key (`rrm.wire.agent_auth.rotation_message`)."""

    public_key: PublicKey
    nonce: Annotated[str, msgspec.Meta(description="from POST /agent/v1/rotate/challenge")]
    proof: Annotated[str, msgspec.Meta(description="base64url Ed25519 signature by the current key")]


class ResourceResult(msgspec.Struct, frozen=True, kw_only=True):
    """One delivered resource: applied or failed, whether the sidecar lists it as loaded (None when the
    agent cannot see the sidecar), and since when it has been so (the directors' time, as the agent knows
    it)."""

    kind: str = "Component"
    name: str
    state: ResourceState
    message: str = ""
    revision: int | None = None
    loaded: bool | None = None
    since: datetime | None = None

    def __post_init__(self) -> None:
        if len(self.message) > MAX_TEXT_LENGTH:
            force_setattr(self, "message", truncated(self.message))


class LoadedComponent(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    type: str
    version: str = ""


class SidecarReport(msgspec.Struct, frozen=True, kw_only=True):
    """What daprd's `/v1.0/metadata` says it really loaded."""

    reachable: bool
    app_id: str | None = None
    runtime_version: str | None = None
    components: list[LoadedComponent] = []
    error: str = ""

    def __post_init__(self) -> None:
        if len(self.error) > MAX_TEXT_LENGTH:
            force_setattr(self, "error", truncated(self.error))


class ReloadResult(msgspec.Struct, frozen=True, kw_only=True):
    """What the agent did to make sidecars load a change: a reload command, or workload restarts."""

    command: str
    exit_code: int
    output: Annotated[str, msgspec.Meta(description="the end of the command's output")] = ""
    restarted: Annotated[
        list[str], msgspec.Meta(description="workloads restarted, as Kind/namespace/name")
    ] = []

    def __post_init__(self) -> None:
        if len(self.output) > MAX_TEXT_LENGTH:
            force_setattr(self, "output", truncated_start(self.output))


class DriftRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An object the agent manages that was changed outside rrm and put back."""

    resource: str
    change: DriftChange
    detected_at: datetime
    fields: Annotated[
        list[str], msgspec.Meta(description="paths that changed (never values), for `modified`")
    ] = []


class StatusReport(msgspec.Struct, frozen=True, kw_only=True):
    """`PUT /agent/v1/status`: applied state, per-resource results, the sidecar's view; also the heartbeat."""

    applied_hash: str | None = None
    resources: list[ResourceResult] = []
    sidecar: SidecarReport | None = None
    reload: ReloadResult | None = None
    drift: list[DriftRecord] = []
    agent_version: str = ""
    target: str = ""
    heartbeat_interval: Annotated[float, msgspec.Meta(gt=0, le=MAX_HEARTBEAT_INTERVAL)] = 15.0
    message: str = ""

    def __post_init__(self) -> None:
        if type(self.heartbeat_interval) is not float:  # an int given in Python is sent as a JSON number
            force_setattr(self, "heartbeat_interval", float(self.heartbeat_interval))
        if len(self.message) > MAX_TEXT_LENGTH:
            force_setattr(self, "message", truncated(self.message))


# --- what the agent receives --------------------------------------------------------------------------------


class PairResponse(msgspec.Struct, frozen=True, kw_only=True):
    runtime_id: str
    runtime_name: str
    kind: RuntimeKind
    key_id: str


class RotateChallenge(msgspec.Struct, frozen=True, kw_only=True):
    """A nonce for one key rotation, issued to the runtime that asked, valid for `expires_in` seconds."""

    nonce: str
    expires_in: int


class RotateResponse(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str


class DeliveredSecret(msgspec.Struct, frozen=True, kw_only=True):
    """A secret's values, delivered only to runtimes whose placed components reference it."""

    name: str
    revision: int
    data: dict[str, str]


class DesiredState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a runtime should run. Runtimes with the same placement receive byte-identical bodies.

    `hash` is `rrm.core.hashing.state_hash(components, secrets)`; the agent recomputes it to verify.
    `components` are complete Dapr manifests (apiVersion, kind, metadata, spec, auth?, scopes?).
    """

    hash: str
    components: list[dict[str, Any]]
    secrets: list[DeliveredSecret] = []


# --- encoding and decoding ----------------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """`value` as JSON data: objects with the fields in their order, datetimes in RFC 3339 (UTC as `Z`)."""
    return msgspec.to_builtins(value)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON of `value`."""
    return _ENCODER.encode(value)


_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}


class WireError(ValueError):
    """A body the protocol does not allow; `path` leads to the field (empty: the body itself)."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(f"{field_name(path) or 'body'}: {message}")
        self.path = path
        self.message = message


def decode(kind: type[T], body: bytes | str) -> T:
    """Parse a JSON body into `kind`; `WireError` if the protocol does not allow it."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind)
    try:
        return cast(T, decoder.decode(body))
    except msgspec.ValidationError as exc:
        raise _wire_error(exc) from None
    except msgspec.DecodeError as exc:
        raise WireError((), f"not JSON: {exc}") from None
    except RecursionError:
        raise _too_deep(body) from None


def replace(value: S, **changes: Any) -> S:
    """A copy of the Struct `value` with `changes` (free text cut as when it is made)."""
    return msgspec.structs.replace(value, **changes)


# `Expected `str`, got `int` - at `$.resources[0].name``: the path after " - at ", each step a field or an
# index; a path that ends in `[...]` leads to one of a dict's values, whose key msgspec does not show
_AT = re.compile(r" - at `\$(.*?)(\[\.\.\.\])?`$")
_STEP = re.compile(r"\.(\w+)|\[(\d+)\]")
_MISSING = re.compile(r"^Object missing required field `(\w+)`$")
_ENUM = re.compile(r"^Invalid enum value .*$")


def _wire_error(exc: msgspec.ValidationError) -> WireError:
    text = str(exc)
    at = _AT.search(text)
    path: tuple[str | int, ...] = ()
    of_a_value = ""
    if at is not None:
        text = text[: at.start()]
        path = tuple(int(index) if index else name for name, index in _STEP.findall(at.group(1)))
        of_a_value = "a value: " if at.group(2) else ""
    missing = _MISSING.match(text)
    if missing is not None:
        return WireError((*path, missing.group(1)), "missing")
    # the only message of msgspec's that shows the value it refuses
    text = _TYPES.sub(_in_words, _ENUM.sub("not one of the values allowed here", text))
    return WireError(path, of_a_value + text)


# `Expected `int | null`, got `str`` reads "expected an integer or null, got a string"
_TYPES = re.compile(r"^Expected `([^`]+)`, got `(\w+)`$")
_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
    "datetime": "a date-time",
}


def _in_words(match: re.Match[str]) -> str:
    expected = " or ".join(_TYPE_NAMES.get(name, name) for name in match.group(1).split(" | "))
    return f"expected {expected}, got {_TYPE_NAMES.get(match.group(2), match.group(2))}"


def _too_deep(body: bytes | str) -> WireError:
    """The error for a body too deep to decode, naming the field that is nested too deep."""
    try:
        decode_json(body)
    except DecodeError as exc:
        return WireError(exc.path, exc.message)
    return WireError((), "nested too deep")


def schema(kind: type[Any]) -> dict[str, Any]:
    """The JSON schema of `kind` with every definition in place (no `$ref`): an OpenAPI operation can carry
    it as it is."""
    (top,), definitions = msgspec.json.schema_components([kind], ref_template="{name}")
    return dict(_inlined(top, definitions))


def _inlined(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inlined(definitions[node["$ref"]], definitions)
        return {key: _inlined(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inlined(item, definitions) for item in node]
    return node
