"""`rrm.wire.plain`, the agents' pydantic-free side of the protocol, stays in step with `rrm.wire.models`.

The models define the protocol. Whatever they serialize, the plain decoder reads as the same data; whatever
they reject, it rejects too (it may be stricter, never laxer); what the agent encodes validates with them and
is exactly what they would have sent.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from rrm.wire import models, plain
from rrm.wire.plain import WireError, decode, dumps, encode

RECEIVED = ["DesiredState", "DeliveredSecret", "PairResponse", "RotateChallenge", "RotateResponse"]
SENT = [
    "StatusReport",
    "ResourceResult",
    "SidecarReport",
    "LoadedComponent",
    "ReloadResult",
    "DriftRecord",
    "PairRequest",
    "RotateRequest",
]
DECODED = ["DesiredState", "PairResponse", "RotateChallenge", "RotateResponse"]


# --- the same shapes ----------------------------------------------------------------------------------------


def _default(default: Any, factory: Any) -> Any:
    return factory() if callable(factory) else default


def _type_name(annotation: Any) -> str:
    return repr(annotation).replace("rrm.wire.models.", "").replace("rrm.wire.plain.", "")


@pytest.mark.parametrize("name", RECEIVED + SENT)
def test_each_plain_class_has_the_models_fields_in_order_with_their_types_and_defaults(name: str) -> None:
    model: type[BaseModel] = getattr(models, name)
    mirror = getattr(plain, name)
    hints = typing.get_type_hints(mirror)

    expected = [
        (
            field_name,
            _type_name(info.annotation),
            info.is_required(),
            None if info.is_required() else _default(info.default, info.default_factory),
        )
        for field_name, info in model.model_fields.items()
    ]
    actual = [
        (
            f.name,
            _type_name(hints[f.name]),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            None
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            else _default(f.default, f.default_factory),
        )
        for f in dataclasses.fields(mirror)
    ]
    assert actual == expected


def test_every_model_an_agent_uses_has_a_plain_mirror() -> None:
    assert sorted(RECEIVED + SENT) == sorted(
        n
        for n in models.__all__
        if isinstance(getattr(models, n), type) and issubclass(getattr(models, n), BaseModel)
    )
    assert models.RUNTIME_KINDS is plain.RUNTIME_KINDS


# --- decoding: what the control plane sends -----------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)

delivered_secrets = st.builds(
    models.DeliveredSecret,
    name=st.text(max_size=12),
    revision=st.integers(),
    data=st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=4),
)
desired_states = st.builds(
    models.DesiredState,
    hash=st.text(max_size=64),
    components=st.lists(json_objects, max_size=4),
    secrets=st.lists(delivered_secrets, max_size=3),
)
pair_responses = st.builds(
    models.PairResponse,
    runtime_id=st.text(max_size=12),
    runtime_name=st.text(max_size=12),
    kind=st.sampled_from(models.RUNTIME_KINDS),
    key_id=st.text(max_size=24),
)
rotate_responses = st.builds(models.RotateResponse, key_id=st.text(max_size=24))
rotate_challenges = st.builds(models.RotateChallenge, nonce=st.text(max_size=24), expires_in=st.integers())
answers = st.one_of(desired_states, pair_responses, rotate_responses, rotate_challenges)


@given(answers)
def test_whatever_the_models_send_decodes_to_the_same_data(answer: BaseModel) -> None:
    decoded = decode(getattr(plain, type(answer).__name__), answer.model_dump_json())

    assert type(decoded).__name__ == type(answer).__name__
    assert encode(decoded) == answer.model_dump(mode="json")


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document, the document itself first."""
    found = [at]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*at, index))
    return found


def _mutate(document: Any, data: st.DataObject) -> Any:
    """`document` with one place deleted, replaced by any JSON value, or given an unknown key."""
    path = data.draw(st.sampled_from(_paths(document)))
    if not path:
        return data.draw(json_values)
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    action = data.draw(st.sampled_from(["delete", "replace", "add"]))
    if action == "delete":
        del parent[path[-1]]
    elif action == "replace":
        parent[path[-1]] = data.draw(json_values)
    elif isinstance(parent, dict):
        parent[data.draw(st.text(max_size=8))] = data.draw(json_values)
    return document


def _both(name: str, body: str) -> tuple[Any, Any]:
    """What the model and the plain decoder make of `body`: an instance, or the error they raise."""
    try:
        validated: Any = getattr(models, name).model_validate_json(body)
    except ValidationError as exc:
        validated = exc
    try:
        decoded: Any = decode(getattr(plain, name), body)
    except WireError as exc:
        decoded = exc
    return validated, decoded


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(answers, st.data())
def test_a_malformed_answer_is_rejected_and_nothing_the_models_reject_is_accepted(
    answer: BaseModel, data: st.DataObject
) -> None:
    name = type(answer).__name__
    document = _mutate(answer.model_dump(mode="json"), data)
    validated, decoded = _both(name, json.dumps(document))

    if isinstance(decoded, WireError):
        event("rejected" + (", the model coerces it" if isinstance(validated, BaseModel) else ", by both"))
    else:
        assert isinstance(validated, BaseModel), f"accepted what the model rejects: {validated}"
        assert encode(decoded) == validated.model_dump(mode="json")


@given(st.sampled_from(DECODED), json_values)
def test_any_json_is_rejected_unless_the_models_accept_it_too(name: str, document: Any) -> None:
    validated, decoded = _both(name, json.dumps(document))

    if isinstance(validated, ValidationError):
        assert isinstance(decoded, WireError)
    elif not isinstance(decoded, WireError):
        assert encode(decoded) == validated.model_dump(mode="json")


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("DesiredState", "", "not JSON"),
        ("DesiredState", b"\xff", "not JSON"),
        ("DesiredState", '{"hash": "h"', "not JSON"),
        ("DesiredState", "[]", "body: expected an object, got an array"),
        ("DesiredState", '{"components": []}', "hash: missing"),
        ("DesiredState", '{"hash": 1, "components": []}', "hash: expected a string, got an integer"),
        (
            "DesiredState",
            '{"hash": "h", "components": [[]]}',
            "components[0]: expected an object, got an array",
        ),
        (
            "DesiredState",
            '{"hash": "h", "components": [], "secrets": null}',
            "secrets: expected an array, got null",
        ),
        (
            "DesiredState",
            '{"hash": "h", "components": [], "secrets": [{"name": "s", "revision": true, "data": {}}]}',
            "secrets[0].revision: expected an integer, got a boolean",
        ),
        (
            "DesiredState",
            '{"hash": "h", "components": [], "secrets": [{"name": "s", "revision": 1, "data": {"k": 7}}]}',
            "secrets[0].data.k: expected a string, got an integer",
        ),
        (
            "PairResponse",
            '{"runtime_id": "r", "runtime_name": "n", "kind": "mainframe", "key_id": "k"}',
            "kind: expected one of selfhosted, kubernetes",
        ),
        ("RotateResponse", '{"key_id": null}', "key_id: expected a string, got null"),
    ],
)
def test_a_malformed_answer_is_named_by_its_field(name: str, body: str | bytes, message: str) -> None:
    with pytest.raises(WireError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        decode(getattr(plain, name), body)
    if "got a boolean" not in message:
        with pytest.raises(ValidationError):
            getattr(models, name).model_validate_json(body)


def test_an_error_never_shows_a_value() -> None:
    body = '{"hash": "h", "components": [], "secrets": [{"name": "s", "revision": "hunter2", "data": {}}]}'

    with pytest.raises(WireError) as error:
        decode(plain.DesiredState, body)
    assert "hunter2" not in str(error.value)


def test_unknown_keys_are_ignored_as_the_models_ignore_them() -> None:
    body = '{"runtime_id": "r", "runtime_name": "n", "kind": "kubernetes", "key_id": "k", "later": {"x": 1}}'

    assert decode(plain.PairResponse, body) == plain.PairResponse(
        runtime_id="r", runtime_name="n", kind="kubernetes", key_id="k"
    )


# --- encoding: what the agent sends -------------------------------------------------------------------------

offsets = st.integers(min_value=-86399, max_value=86399).map(lambda s: timezone(timedelta(seconds=s)))
moments = st.one_of(
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(timezones=st.none() | offsets | st.timezones()),
)
words = st.text(max_size=12)
resource_results = st.builds(
    plain.ResourceResult,
    kind=words,
    name=words,
    state=st.sampled_from(plain.RESOURCE_STATES),
    message=words,
    revision=st.none() | st.integers(),
)
sidecar_reports = st.builds(
    plain.SidecarReport,
    reachable=st.booleans(),
    app_id=st.none() | words,
    runtime_version=st.none() | words,
    components=st.lists(st.builds(plain.LoadedComponent, name=words, type=words, version=words), max_size=3),
    error=words,
)
reload_results = st.builds(
    plain.ReloadResult,
    command=words,
    exit_code=st.integers(),
    output=words,
    restarted=st.lists(words, max_size=3),
)
drift_records = st.builds(
    plain.DriftRecord,
    resource=words,
    change=st.sampled_from(plain.DRIFT_CHANGES),
    detected_at=moments,
    fields=st.lists(words, max_size=3),
)
status_reports = st.builds(
    plain.StatusReport,
    applied_hash=st.none() | words,
    resources=st.lists(resource_results, max_size=3),
    sidecar=st.none() | sidecar_reports,
    reload=st.none() | reload_results,
    drift=st.lists(drift_records, max_size=3),
    agent_version=words,
    target=words,
    heartbeat_interval=st.integers(min_value=1, max_value=3600)
    | st.floats(min_value=0, max_value=3600, exclude_min=True),
    message=words,
)
requests = st.one_of(
    status_reports,
    st.builds(
        plain.PairRequest, token=st.text(min_size=1, max_size=12), public_key=words, agent_version=words
    ),
    st.builds(plain.RotateRequest, public_key=words, nonce=words, proof=words),
)


def as_model(value: Any) -> Any:
    """The model the agent would have built for the same data, field by field (not through JSON)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: as_model(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return getattr(models, type(value).__name__)(**fields)
    if isinstance(value, list):
        return [as_model(item) for item in value]
    return value


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_what_the_agent_sends_is_exactly_what_the_model_would_send(request: Any) -> None:
    model = as_model(request)

    # the same JSON, keys in the same order
    assert json.dumps(encode(request)) == json.dumps(model.model_dump(mode="json"))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_what_the_agent_sends_validates_with_the_model_and_round_trips(request: Any) -> None:
    # pydantic writes an offset of seconds cut to minutes, so such a time reads back a little off: the model's
    # own output does the same (the test above shows the two write the same)
    assume(not _offset_of_seconds(request))
    validated = getattr(models, type(request).__name__).model_validate_json(dumps(request))

    assert validated == as_model(request)
    assert validated.model_dump(mode="json") == encode(request)


def _offset_of_seconds(request: Any) -> bool:
    offsets = [r.detected_at.utcoffset() for r in getattr(request, "drift", [])]
    return any(offset is not None and offset % timedelta(minutes=1) for offset in offsets)


@given(
    st.sampled_from(["ResourceResult", "DriftRecord"]),
    st.sampled_from(["applied", "failed", "pending", "modified", "deleted", "created"]) | st.text(max_size=9),
)
def test_choices_are_checked_as_the_models_check_them(name: str, choice: str) -> None:
    given_fields: dict[str, Any] = (
        {"name": "c", "state": choice}
        if name == "ResourceResult"
        else {"resource": "r", "change": choice, "detected_at": datetime.now(UTC)}
    )
    assert _accepts(getattr(plain, name), given_fields) == _accepts(getattr(models, name), given_fields)


@given(
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-10, max_value=4000)
    | st.sampled_from([0, 0.0, 3600, 3600.0, 3600.0000001, 1e-300, -0.0])
)
def test_the_heartbeat_interval_is_bounded_as_in_the_model(interval: float) -> None:
    fields = {"heartbeat_interval": interval}

    assert _accepts(plain.StatusReport, fields) == _accepts(models.StatusReport, fields)


@pytest.mark.parametrize("token", ["", "t"])
def test_an_empty_pairing_token_is_refused_as_by_the_model(token: str) -> None:
    fields = {"token": token, "public_key": "pem"}

    assert _accepts(plain.PairRequest, fields) == _accepts(models.PairRequest, fields) == bool(token)


def _accepts(kind: Any, fields: dict[str, Any]) -> bool:
    try:
        kind(**fields)
    except ValueError:  # pydantic's ValidationError is one too
        return False
    return True


def test_an_int_heartbeat_interval_is_sent_as_a_float_as_the_model_does() -> None:
    report = plain.StatusReport(heartbeat_interval=30)

    assert encode(report)["heartbeat_interval"] == 30.0
    assert isinstance(encode(report)["heartbeat_interval"], float)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5, 123, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(seconds=-37))),
        datetime(2024, 1, 2, 3, 4, 5),
    ],
)
def test_datetimes_are_written_as_pydantic_writes_them(moment: datetime) -> None:
    record = plain.DriftRecord(resource="r", change="deleted", detected_at=moment)

    assert encode(record) == as_model(record).model_dump(mode="json")


# --- the package --------------------------------------------------------------------------------------------


def test_the_plain_side_loads_no_pydantic_and_the_models_still_import_from_the_package() -> None:
    code = (
        "import sys, rrm.wire.plain, rrm.wire.agent_auth\n"
        "loaded = [m for m in sys.modules if m.startswith(('pydantic', 'rrm.wire.models'))]\n"
        "assert not loaded, loaded\n"
        "from rrm.wire import DesiredState, RUNTIME_KINDS, StatusReport\n"
        "from rrm.wire.models import DesiredState as Model\n"
        "assert DesiredState is Model and 'pydantic' in sys.modules\n"
        "import rrm.wire\n"
        "assert set(rrm.wire.__all__) <= set(dir(rrm.wire))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr


def test_an_unknown_name_is_an_attribute_error() -> None:
    import rrm.wire

    with pytest.raises(AttributeError, match="NoSuchModel"):
        rrm.wire.NoSuchModel  # noqa: B018
