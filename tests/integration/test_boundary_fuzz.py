"""A bounded fuzz pass (hypothesis) over the admin apply endpoint and the agent endpoints of a real server:
random nesting, sizes, encodings and invalid UTF-8 never get a 5xx, and a refused request stores nothing."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .compass import application
from .harness import AgentIdentity, ServerProcess, component, expect_status, pair, register, secret

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure here is reproducible, never flaky
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
SHALLOW = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
)


@st.composite
def deep_values(draw: st.DrawFn) -> Any:
    """A chain of arrays and objects from 1 to 150 levels, on both sides of the depth limit (64); or a marker
    that `encoded` writes as hundreds to thousands of levels, more than `json.dumps` can write itself."""
    if draw(st.booleans()):
        return f"{DEEP_MARK}{draw(st.sampled_from([300, 600, 900, 3000]))}"
    value = draw(LEAVES)
    for _ in range(draw(st.integers(min_value=1, max_value=150))):
        value = [value] if draw(st.booleans()) else {draw(st.text(max_size=5)): value}
    return value


DEEP_MARK = "fuzz-deep-"
DEEP_MARKS = re.compile(rb'"fuzz-deep-(\d+)"')
VALUES = SHALLOW | deep_values() | st.text(min_size=1000, max_size=20_000)


def label_definition() -> dict[str, Any]:
    return {
        "apiVersion": "rrm.io/v1",
        "kind": "LabelDefinition",
        "metadata": {"name": "fz-label"},
        "spec": {"schema": {"type": "string"}},
    }


BASES = [
    component("fz-component", "t-fuzz=placed", metadata=[{"name": "url", "value": "http://x.invalid/"}]),
    secret("fz-secret", {"key": "value"}),
    application("fz-app"),
    label_definition(),
]
# where a value is replaced; a path that does not fit the document replaces its top-level `spec`
PATHS = [
    ("spec",),
    ("spec", "metadata", 0, "value"),
    ("metadata", "name"),
    ("metadata", "annotations"),
    ("stringData",),
    ("stringData", "key"),
    ("spec", "bundles", 0, "credentials"),
    ("spec", "schema"),
    ("apiVersion",),
    ("kind",),
]


@st.composite
def documents(draw: st.DrawFn) -> Any:
    document = copy.deepcopy(draw(st.sampled_from(BASES)))
    path, value = draw(st.sampled_from(PATHS)), draw(VALUES)
    target: Any = document
    try:
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        document["spec"] = value
    return document


@st.composite
def encoded(draw: st.DrawFn, payloads: st.SearchStrategy[Any]) -> bytes:
    """JSON text of a payload in UTF-8 or another encoding, possibly cut short or with invalid UTF-8 in it."""
    text = json.dumps(draw(payloads), ensure_ascii=draw(st.booleans()))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1", "cp1252"]))
    body = text.encode(encoding, errors="replace")
    body = DEEP_MARKS.sub(lambda m: b"[" * int(m.group(1)) + b"0" + b"]" * int(m.group(1)), body)
    mangle = draw(st.sampled_from(["none", "none", "cut", "invalid-utf8", "bytes", "huge"]))
    if mangle == "huge":  # trailing blanks keep it JSON, and make it larger than any body limit
        body += b" " * (5 * 1024 * 1024)
    elif mangle == "cut":
        body = body[: draw(st.integers(min_value=0, max_value=len(body)))]
    elif mangle == "invalid-utf8":
        at = draw(st.integers(min_value=0, max_value=len(body)))
        body = body[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"])) + body[at:]
    elif mangle == "bytes":
        body = draw(st.binary(max_size=2000))
    return body


def stored(admin: httpx.Client) -> dict[str, Any]:
    paths = ["/api/v1/components", "/api/v1/secrets", "/api/v1/applications", "/api/v1/labeldefinitions"]
    return {path: expect_status(admin.get(path), 200).json() for path in paths}


def post_raw(
    client: httpx.Client | None, method: str, url: str, body: bytes, **kwargs: Any
) -> httpx.Response:
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    if client is not None:
        return client.request(method, url, content=body, headers=headers, **kwargs)
    return httpx.request(method, url, content=body, headers=headers, timeout=60, **kwargs)


def no_server_error(response: httpx.Response) -> httpx.Response:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    return response


@FUZZ
@given(
    body=encoded(
        st.fixed_dictionaries(
            {"documents": st.lists(documents(), min_size=1, max_size=3)},
            optional={"dry_run": st.booleans(), "strict": st.booleans()},
        )
    )
)
def test_apply_never_fails_with_a_5xx_and_a_refusal_stores_nothing(
    server: ServerProcess, body: bytes
) -> None:
    admin = server.admin
    before = stored(admin)
    response = no_server_error(post_raw(admin, "POST", "/api/v1/apply", body))
    if response.status_code != 200:
        assert stored(admin) == before


@pytest.fixture(scope="module")
def fuzzed_runtime(server: ServerProcess) -> AgentIdentity:
    return pair(server.url, register(server.admin, "fz-agent"))


STATUS_REPORTS = st.fixed_dictionaries(
    {},
    optional={
        "applied_hash": st.none() | st.text(max_size=70),
        "resources": st.lists(
            st.fixed_dictionaries({"name": st.text(max_size=20), "state": st.sampled_from(["applied", "x"])})
            | VALUES,
            max_size=5,
        ),
        "message": VALUES,
        "heartbeat_interval": LEAVES,
        "sidecar": VALUES,
        "drift": VALUES,
    },
)


@FUZZ
@given(body=encoded(STATUS_REPORTS | VALUES))
def test_status_reports_never_fail_with_a_5xx_and_a_refusal_stores_nothing(
    server: ServerProcess, fuzzed_runtime: AgentIdentity, body: bytes
) -> None:
    def reported() -> Any:
        shown = expect_status(server.admin.get(f"/api/v1/runtimes/{fuzzed_runtime.runtime_name}"), 200).json()
        return {key: shown[key] for key in ("resources", "sidecar", "reload", "drift", "message")}

    before = reported()
    url = f"{fuzzed_runtime.server_url}/agent/v1/status"
    response = no_server_error(post_raw(None, "PUT", url, body, headers=fuzzed_runtime.headers()))
    if response.status_code != 204:
        assert reported() == before


PAIR_REQUESTS = st.fixed_dictionaries(
    {}, optional={"token": VALUES | st.just("rrmpt_x"), "public_key": VALUES, "agent_version": VALUES}
)


@FUZZ
@given(body=encoded(PAIR_REQUESTS | VALUES))
def test_pairing_never_fails_with_a_5xx_and_a_refusal_stores_nothing(
    server: ServerProcess, body: bytes
) -> None:
    def runtimes() -> list[tuple[str, str, str]]:
        listed = expect_status(server.admin.get("/api/v1/runtimes"), 200).json()
        return sorted((r["id"], r["name"], json.dumps(r["labels"])) for r in listed)

    before = runtimes()
    response = no_server_error(post_raw(None, "POST", f"{server.url}/agent/v1/pair", body))
    assert response.status_code != 201
    assert runtimes() == before


@FUZZ
@given(
    wait=st.sampled_from(["0", "0.05", "-1", "nan", "inf", "1e309", "x", "", "0x10", "\u0660"]),
    etag=st.text(max_size=100).filter(lambda t: t.isascii() and t.isprintable()),
)
def test_desired_state_never_fails_with_a_5xx(fuzzed_runtime: AgentIdentity, wait: str, etag: str) -> None:
    response = fuzzed_runtime.desired_state(etag=etag or None, params={"wait": wait})
    no_server_error(response)
