"""The agent's side of the agent protocol, in the standard library alone: an agent never loads pydantic.

`rrm.wire.models` (pydantic) stays the protocol's definition: the control plane validates with it and the
API docs are made from it. The frozen dataclasses here mirror the models an agent reads and writes, field
for field and in the same order, with the same defaults; the values a field may take (`RuntimeKind`,
`ResourceState`, `DriftChange`) and the heartbeat bounds are defined here once, for both.
`tests/unit/test_wire_plain.py` keeps the two in step: whatever the models serialize decodes here to the
same data, whatever they reject is rejected here too, and what is encoded here validates with the models
and is exactly what they would send.

Decoding (`decode`) is strict where pydantic is lax: each value must have the JSON type the control plane
sends (no "3" for 3), so that whatever is accepted here the models accept too, with the same data. Keys the
protocol does not know are ignored, as the models ignore them. A malformed body raises `WireError`, whose
message names the field and never a value (a delivered secret's values are in the same body).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, TypeVar, cast, get_args

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


def _truncate(instance: Any, *names: str) -> None:
    for name in names:
        object.__setattr__(instance, name, truncated(getattr(instance, name)))


class WireError(ValueError):
    """A body the protocol does not allow, e.g. `secrets[1].revision: expected an integer, got a string`."""


# --- what the agent sends -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class PairRequest:
    token: str
    public_key: str
    agent_version: str = ""

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("token: must not be empty")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RotateRequest:
    public_key: str
    nonce: str
    proof: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResourceResult:
    kind: str = "Component"
    name: str
    state: ResourceState
    message: str = ""
    revision: int | None = None
    loaded: bool | None = None
    since: datetime | None = None

    def __post_init__(self) -> None:
        _check_choice("state", self.state, RESOURCE_STATES)
        _truncate(self, "message")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadedComponent:
    name: str
    type: str
    version: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SidecarReport:
    reachable: bool
    app_id: str | None = None
    runtime_version: str | None = None
    components: list[LoadedComponent] = dataclasses.field(default_factory=list)
    error: str = ""

    def __post_init__(self) -> None:
        _truncate(self, "error")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReloadResult:
    command: str
    exit_code: int
    output: str = ""
    restarted: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", truncated_start(self.output))


@dataclasses.dataclass(frozen=True, kw_only=True)
class DriftRecord:
    resource: str
    change: DriftChange
    detected_at: datetime
    fields: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        _check_choice("change", self.change, DRIFT_CHANGES)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StatusReport:
    applied_hash: str | None = None
    resources: list[ResourceResult] = dataclasses.field(default_factory=list)
    sidecar: SidecarReport | None = None
    reload: ReloadResult | None = None
    drift: list[DriftRecord] = dataclasses.field(default_factory=list)
    agent_version: str = ""
    target: str = ""
    heartbeat_interval: float = 15.0
    message: str = ""

    def __post_init__(self) -> None:
        interval = float(self.heartbeat_interval)  # sent as a JSON float, as the model does with an int
        if not 0 < interval <= MAX_HEARTBEAT_INTERVAL:
            raise ValueError(f"heartbeat_interval: must be in (0, {MAX_HEARTBEAT_INTERVAL}] seconds")
        object.__setattr__(self, "heartbeat_interval", interval)
        _truncate(self, "message")


# --- what the agent receives --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class PairResponse:
    runtime_id: str
    runtime_name: str
    kind: RuntimeKind
    key_id: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class RotateChallenge:
    nonce: str
    expires_in: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class RotateResponse:
    key_id: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeliveredSecret:
    name: str
    revision: int
    data: dict[str, str]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DesiredState:
    """See `rrm.wire.models.DesiredState`; `hash` covers `components` and the secrets' names and revisions."""

    hash: str
    components: list[dict[str, Any]]
    secrets: list[DeliveredSecret] = dataclasses.field(default_factory=list)


# --- encoding -----------------------------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """`value` as JSON data, exactly as the model of the same name gives it with `model_dump(mode="json")`:
    objects with the fields in their order, datetimes in ISO 8601 as pydantic writes them."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, datetime):
        return _isoformat(value)
    return value


def dumps(value: Any) -> bytes:
    """Compact JSON of `encode(value)`, as pydantic's `model_dump_json()` writes it (UTF-8, no escapes)."""
    return json.dumps(encode(value), separators=(",", ":"), ensure_ascii=False).encode()


def _isoformat(moment: datetime) -> str:
    """Pydantic's form: a UTC offset is `Z`, any other one `±HH:MM` (seconds dropped), naive has none."""
    text = moment.replace(tzinfo=None).isoformat()
    offset = moment.utcoffset()
    if offset is None:
        return text
    seconds = int(offset.total_seconds())
    if seconds == 0:
        return text + "Z"
    sign, seconds = ("-", -seconds) if seconds < 0 else ("+", seconds)
    return f"{text}{sign}{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


# --- decoding -----------------------------------------------------------------------------------------------


def decode(kind: type[T], body: bytes | str) -> T:
    """Parse a JSON body into `kind` (`DesiredState`, `PairResponse`, `RotateChallenge` or `RotateResponse`);
    `WireError` if the protocol does not allow it."""
    try:
        text = body.decode() if isinstance(body, bytes) else body
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"not JSON: {type(exc).__name__}") from None
    return cast(T, _DECODERS[kind](data, ""))


def _desired_state(data: Any, at: str) -> DesiredState:
    fields = _object(data, at)
    components = _list(fields, "components", at)
    secrets = _list(fields, "secrets", at, default=[])
    return DesiredState(
        hash=_str(fields, "hash", at),
        components=[_object(item, f"{_path(at, 'components')}[{i}]") for i, item in enumerate(components)],
        secrets=[_delivered_secret(item, f"{_path(at, 'secrets')}[{i}]") for i, item in enumerate(secrets)],
    )


def _delivered_secret(data: Any, at: str) -> DeliveredSecret:
    fields = _object(data, at)
    values = _dict(fields, "data", at)
    for key, value in values.items():
        _expect(value, str, "a string", f"{_path(at, 'data')}.{key}")
    return DeliveredSecret(name=_str(fields, "name", at), revision=_int(fields, "revision", at), data=values)


def _pair_response(data: Any, at: str) -> PairResponse:
    fields = _object(data, at)
    kind = _str(fields, "kind", at)
    _check_choice(_path(at, "kind"), kind, RUNTIME_KINDS, WireError)
    return PairResponse(
        runtime_id=_str(fields, "runtime_id", at),
        runtime_name=_str(fields, "runtime_name", at),
        kind=cast(RuntimeKind, kind),
        key_id=_str(fields, "key_id", at),
    )


def _rotate_response(data: Any, at: str) -> RotateResponse:
    return RotateResponse(key_id=_str(_object(data, at), "key_id", at))


def _rotate_challenge(data: Any, at: str) -> RotateChallenge:
    fields = _object(data, at)
    return RotateChallenge(nonce=_str(fields, "nonce", at), expires_in=_int(fields, "expires_in", at))


_DECODERS: dict[type[Any], Callable[[Any, str], Any]] = {
    DesiredState: _desired_state,
    PairResponse: _pair_response,
    RotateResponse: _rotate_response,
    RotateChallenge: _rotate_challenge,
}

_MISSING: Any = object()


def _path(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    return "null" if value is None else names.get(type(value), "an object")


def _expect(value: Any, kind: type[Any], name: str, at: str) -> Any:
    # bool is an int in Python, not in JSON
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise WireError(f"{at or 'body'}: expected {name}, got {_type_name(value)}")
    return value


def _field(fields: dict[str, Any], key: str, at: str, default: Any = _MISSING) -> Any:
    if key in fields:
        return fields[key]
    if default is _MISSING:
        raise WireError(f"{_path(at, key)}: missing")
    return default


def _object(value: Any, at: str) -> dict[str, Any]:
    return cast(dict[str, Any], _expect(value, dict, "an object", at))


def _dict(fields: dict[str, Any], key: str, at: str) -> dict[str, Any]:
    return _object(_field(fields, key, at), _path(at, key))


def _list(fields: dict[str, Any], key: str, at: str, default: Any = _MISSING) -> list[Any]:
    return cast(list[Any], _expect(_field(fields, key, at, default), list, "an array", _path(at, key)))


def _str(fields: dict[str, Any], key: str, at: str) -> str:
    return cast(str, _expect(_field(fields, key, at), str, "a string", _path(at, key)))


def _int(fields: dict[str, Any], key: str, at: str) -> int:
    return cast(int, _expect(_field(fields, key, at), int, "an integer", _path(at, key)))


def _check_choice(
    at: str, value: object, choices: tuple[str, ...], error: type[ValueError] = ValueError
) -> None:
    if value not in choices:
        raise error(f"{at}: expected one of {', '.join(choices)}")
