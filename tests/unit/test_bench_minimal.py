"""The minimal-protocol load generator's pure parts: etcd's watch lines, the status report it sends, and the
comparison of its modes."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, whose benchmarks/ this tests
from benchmarks.etcd import watch_events
from benchmarks.minimal import compare
from benchmarks.minimal_clients import status_body

from rrm.wire.protocol import StatusReport, decode


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_watch_line_with_events_gives_each_revision_and_decoded_value() -> None:
    line = json.dumps(
        {
            "result": {
                "header": {"revision": "8"},
                "events": [
                    {"kv": {"key": _b64(b"k"), "mod_revision": "7", "value": _b64(b'{"a":1}')}},
                    {"kv": {"key": _b64(b"k"), "mod_revision": "8", "value": _b64(b"[]")}},
                ],
            }
        }
    ).encode()
    assert watch_events(line) == (False, [(7, b'{"a":1}'), (8, b"[]")])


def test_the_created_line_confirms_the_watch_and_a_blank_line_is_nothing() -> None:
    assert watch_events(b'{"result":{"header":{"revision":"3"},"created":true}}\n') == (True, [])
    assert watch_events(b"\n") == (False, [])


def test_a_deleted_key_has_an_empty_value() -> None:
    line = {"result": {"events": [{"type": "DELETE", "kv": {"key": _b64(b"k"), "mod_revision": "9"}}]}}
    assert watch_events(json.dumps(line)) == (False, [(9, b"")])


def test_an_error_line_raises() -> None:
    with pytest.raises(ValueError, match="etcd watch error"):
        watch_events(b'{"error":{"grpc_code":1,"message":"context canceled"}}')


def test_the_status_report_applies_every_component_of_the_state_and_is_valid() -> None:
    state = {
        "hash": "abc123",
        "components": [{"metadata": {"name": "one"}}, {"metadata": {"name": "two"}}],
        "secrets": [],
    }
    report = decode(StatusReport, status_body(state))
    assert report.applied_hash == "abc123"
    assert [(r.name, r.state) for r in report.resources] == [("one", "applied"), ("two", "applied")]


def _mode(p99: float, cpu: float) -> dict[str, object]:
    latency = {"count": 10, "p50": p99 / 2, "p90": p99, "p99": p99, "max": p99}
    return {"status": "ok", "latency": latency, "server_cpu_seconds_per_update": cpu}


def test_compare_gives_ratios_to_etcd_and_the_cpu_of_one_status_report() -> None:
    result = {"rrm_watch": _mode(0.2, 1.0), "rrm_status": _mode(0.4, 1.5), "etcd": _mode(0.1, 0.3)}
    compared = compare(result, 1000)
    assert compared["ratio"]["rrm_watch"]["p99"] == 2.0
    assert compared["ratio"]["rrm_status"]["p99"] == 4.0
    assert compared["server_cpu_seconds_per_status_report"] == pytest.approx(0.0005)


def test_compare_leaves_out_a_mode_that_did_not_complete() -> None:
    result = {
        "rrm_watch": _mode(0.2, 1.0),
        "rrm_status": {"status": "incomplete"},
        "etcd": {"status": "unavailable"},
    }
    assert compare(result, 1000) == {"ratio": {}, "server_cpu_seconds_per_status_report": None}
