"""`rrm.wire.protocol`, the agent protocol both sides decode and encode with: strict, errors that name the
field and never show a value, free text cut alike, and what one side encodes the other decodes unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrm.core.bounded import MAX_DEPTH
from rrm.wire import protocol
from rrm.wire.protocol import (
    DesiredState,
    DriftRecord,
    PairRequest,
    PairResponse,
    ResourceResult,
    RotateResponse,
    StatusReport,
    WireError,
    decode,
    dumps,
    encode,
    schema,
)

# --- decoding: errors name the field ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "body", "message"),
    [
        (DesiredState, "", "body: not JSON"),
        (DesiredState, b"\xff", "body: not JSON"),
        (DesiredState, '{"hash": "h"', "body: not JSON"),
        (PairRequest, '{"token": "t\\ud800", "public_key": "k"}', "body: not JSON"),  # a lone surrogate
        (DesiredState, "[]", "body: expected an object, got an array"),
        (DesiredState, '{"components": []}', "hash: missing"),
        (DesiredState, '{"hash": 1, "components": []}', "hash: expected a string, got an integer"),
        (
            DesiredState,
            '{"hash": "h", "components": [[]]}',
            "components[0]: expected an object, got an array",
        ),
        (
            DesiredState,
            '{"hash": "h", "components": [], "secrets": null}',
            "secrets: expected an array, got null",
        ),
        (
            DesiredState,
            '{"hash": "h", "components": [], "secrets": [{"name": "s", "revision": true, "data": {}}]}',
            "secrets[0].revision: expected an integer, got a boolean",
        ),
        (
            DesiredState,
            '{"hash": "h", "components": [], "secrets": [{"name": "s", "revision": 1, "data": {"k": 7}}]}',
            "secrets[0].data: a value: expected a string, got an integer",
        ),
        (RotateResponse, '{"key_id": null}', "key_id: expected a string, got null"),
        (StatusReport, '{"resources": [{"state": "applied"}]}', "resources[0].name: missing"),
        (StatusReport, '{"resources": "x"}', "resources: expected an array, got a string"),
        (StatusReport, '{"applied_hash": 3}', "applied_hash: expected a string or null, got an integer"),
        (StatusReport, '{"heartbeat_interval": "30"}', "heartbeat_interval: expected a number, got a string"),
        (StatusReport, '{"heartbeat_interval": 0}', "heartbeat_interval: Expected `float` > 0.0"),
        (StatusReport, '{"heartbeat_interval": 3601}', "heartbeat_interval: Expected `float` <= 3600"),
        (
            StatusReport,
            '{"drift": [{"resource": "r", "change": "deleted", "detected_at": 5}]}',
            "drift[0].detected_at: expected a date-time, got an integer",
        ),
    ],
)
def test_a_malformed_body_is_refused_naming_its_field(
    kind: type[Any], body: str | bytes, message: str
) -> None:
    with pytest.raises(WireError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        decode(kind, body)


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (PairResponse, '{"runtime_id": "r", "runtime_name": "n", "kind": "hunter2", "key_id": "k"}'),
        (StatusReport, '{"resources": [{"name": "c", "state": "hunter2"}]}'),
        (DesiredState, '{"hash": "h", "components": [], "secrets": [{"name": "s", "revision": "hunter2"}]}'),
        (StatusReport, '{"drift": [{"resource": "r", "change": "deleted", "detected_at": "hunter2"}]}'),
    ],
)
def test_an_error_never_shows_a_value(kind: type[Any], body: str) -> None:
    with pytest.raises(WireError) as error:
        decode(kind, body)
    assert "hunter2" not in str(error.value)
    assert error.value.path  # and it says where


def test_a_choice_outside_the_protocol_is_refused_naming_the_field() -> None:
    with pytest.raises(WireError) as error:
        decode(PairResponse, '{"runtime_id": "r", "runtime_name": "n", "kind": "mainframe", "key_id": "k"}')
    assert error.value.path == ("kind",)


@pytest.mark.parametrize("body", ['{"token": "", "public_key": "k"}', '{"public_key": "k"}'])
def test_an_empty_or_missing_pairing_token_is_refused(body: str) -> None:
    with pytest.raises(WireError) as error:
        decode(PairRequest, body)
    assert error.value.path == ("token",)


def test_a_body_nested_too_deep_is_refused_naming_the_field() -> None:
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(WireError) as error:
        decode(StatusReport, '{"later": ' + deep + "}")
    assert error.value.path[0] == "later"
    assert error.value.message == f"nested deeper than {MAX_DEPTH} levels"


def test_values_are_strict_and_unknown_keys_are_ignored() -> None:
    body = '{"runtime_id": "r", "runtime_name": "n", "kind": "kubernetes", "key_id": "k", "later": {"x": 1}}'
    assert decode(PairResponse, body) == PairResponse(
        runtime_id="r", runtime_name="n", kind="kubernetes", key_id="k"
    )
    with pytest.raises(WireError):
        decode(RotateResponse, '{"key_id": 3}')  # no coercion of a number to text
    assert decode(StatusReport, '{"heartbeat_interval": 30}').heartbeat_interval == 30.0


# --- free text and numbers ----------------------------------------------------------------------------------


def test_free_text_is_cut_when_made_and_when_decoded() -> None:
    long = "z" * 5000
    cut = "z" * (protocol.MAX_TEXT_LENGTH - len(" [truncated]")) + " [truncated]"
    made = StatusReport(message=long, resources=[ResourceResult(name="a", state="failed", message=long)])
    decoded = decode(
        StatusReport,
        json.dumps({"message": long, "resources": [{"name": "a", "state": "failed", "message": long}]}),
    )
    for report in (made, decoded):
        assert report.message == cut and report.resources[0].message == cut
    assert protocol.replace(made, message=long).message == cut


def test_an_int_heartbeat_interval_is_sent_as_a_float() -> None:
    report = StatusReport(heartbeat_interval=30)
    assert isinstance(encode(report)["heartbeat_interval"], float)


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05Z"),
        (datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC), "2024-01-02T03:04:05.500000Z"),
        (
            datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
            "2024-01-02T03:04:05-05:30",
        ),
    ],
)
def test_datetimes_are_written_in_rfc_3339(moment: datetime, text: str) -> None:
    assert encode(DriftRecord(resource="r", change="deleted", detected_at=moment))["detected_at"] == text


# --- both sides ---------------------------------------------------------------------------------------------

words = st.text(max_size=12)
moments = st.datetimes(timezones=st.just(UTC))
status_reports = st.builds(
    StatusReport,
    applied_hash=st.none() | words,
    resources=st.lists(
        st.builds(
            ResourceResult,
            name=words,
            state=st.sampled_from(protocol.RESOURCE_STATES),
            message=words,
            revision=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
            loaded=st.none() | st.booleans(),
            since=st.none() | moments,
        ),
        max_size=3,
    ),
    drift=st.lists(
        st.builds(
            DriftRecord, resource=words, change=st.sampled_from(protocol.DRIFT_CHANGES), detected_at=moments
        ),
        max_size=2,
    ),
    heartbeat_interval=st.floats(min_value=0, max_value=3600, exclude_min=True),
    message=st.text(max_size=1100),
)


@given(status_reports)
def test_what_an_agent_sends_the_control_plane_decodes_unchanged(report: StatusReport) -> None:
    assert decode(StatusReport, dumps(report)) == report


def test_every_schema_stands_alone_for_the_api_docs() -> None:
    described = schema(StatusReport)
    assert "$ref" not in json.dumps(described)
    assert described["properties"]["resources"]["items"]["properties"]["state"]["enum"] == list(
        protocol.RESOURCE_STATES
    )
    assert described["properties"]["heartbeat_interval"]["maximum"] == protocol.MAX_HEARTBEAT_INTERVAL


def test_the_protocol_loads_no_pydantic() -> None:
    code = (
        "import sys, rrm.wire.protocol, rrm.wire.agent_auth\n"
        "loaded = [m for m in sys.modules if m.startswith('pydantic')]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
