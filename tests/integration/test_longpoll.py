"""Delivery by long-poll: held while nothing changes for the runtime, answered at once when something does."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from .harness import (
    AgentIdentity,
    ServerProcess,
    apply,
    etag_of,
    expect_status,
    http_binding,
    pair,
    register,
    wait_until,
)

pytestmark = pytest.mark.integration


class Poll:
    """One `GET /agent/v1/desired-state` in a thread: when it went out, what came back and after how long."""

    def __init__(self, identity: AgentIdentity, etag: str, wait: float) -> None:
        self.sent = threading.Event()
        self.response: httpx.Response | None = None
        self.elapsed = 0.0
        self.started = time.monotonic()  # before the request goes out
        self._thread = threading.Thread(target=self._run, args=(identity, etag, wait))
        self._thread.start()

    def _run(self, identity: AgentIdentity, etag: str, wait: float) -> None:
        hooks = {"request": [lambda _: self.sent.set()]}
        with httpx.Client(base_url=identity.server_url, timeout=wait + 30, event_hooks=hooks) as client:
            started = time.monotonic()
            self.response = client.get(
                "/agent/v1/desired-state",
                params={"wait": wait},
                headers={**identity.headers(), "If-None-Match": f'"{etag}"'},
            )
            self.elapsed = time.monotonic() - started

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float) -> httpx.Response:
        self._thread.join(timeout)
        assert self.response is not None, f"no answer within {timeout} s"
        return self.response


def paired(server: ServerProcess, name: str, label: str) -> tuple[AgentIdentity, str]:
    identity = pair(server.url, register(server.admin, name, labels={"t-lp": label}))
    first = expect_status(identity.desired_state(), 200)
    assert etag_of(first) == first.json()["hash"], "the ETag is not the desired-state hash"
    return identity, etag_of(first)


def test_unchanged_state_is_held_then_answered_304(server: ServerProcess) -> None:
    identity, etag = paired(server, "lp-idle", "idle")
    poll = Poll(identity, etag, wait=2)
    wait_until(poll.sent.is_set, 10, "the long-poll request to go out")
    # A change for another runtime must not answer this one with its unchanged state.
    apply(server.admin, [http_binding("lp-elsewhere", "t-lp=elsewhere", "http://elsewhere.invalid/")])
    answer = poll.result(30)
    assert answer.status_code == 304, answer.text
    assert poll.elapsed >= 1.0, f"answered 304 after {poll.elapsed:.2f} s of a 2 s wait"

    stale = expect_status(identity.desired_state(etag="0" * 64, wait=30), 200)
    assert etag_of(stale) == etag, "a stale ETag must get the current state at once"


def test_a_change_during_the_wait_answers_at_once_with_the_new_state(server: ServerProcess) -> None:
    identity, etag = paired(server, "lp-wake", "wake")
    poll = Poll(identity, etag, wait=25)
    wait_until(poll.sent.is_set, 10, "the long-poll request to go out")
    assert not poll.done, f"answered before anything changed: {poll.response}"

    apply(server.admin, [http_binding("lp-wake-web", "t-lp=wake", "http://wake.invalid/")])
    answer = poll.result(20)
    assert answer.status_code == 200, answer.text
    new_hash = answer.json()["hash"]
    assert new_hash != etag and etag_of(answer) == new_hash
    assert [c["metadata"]["name"] for c in answer.json()["components"]] == ["lp-wake-web"]
    assert poll.elapsed < 20, f"took {poll.elapsed:.1f} s: woken by the timeout, not by the change"
    assert expect_status(identity.desired_state(), 200).json()["hash"] == new_hash


DELIVERY_WINDOW = 1.0  # `rrm server --delivery-window`, default


def test_a_runtime_is_sent_at_most_one_state_per_delivery_window_and_then_the_newest(
    server: ServerProcess,
) -> None:
    started = time.monotonic()  # before the first state goes out
    identity, first = paired(server, "lp-burst", "burst")

    apply(server.admin, [http_binding("lp-burst-web", "t-lp=burst", "http://burst.invalid/1")])
    poll = Poll(identity, first, wait=30)
    second = poll.result(40)
    assert second.status_code == 200, second.text
    assert time.monotonic() - started >= DELIVERY_WINDOW, "a second state went out within the window"

    for version in (2, 3, 4):
        apply(server.admin, [http_binding("lp-burst-web", "t-lp=burst", f"http://burst.invalid/{version}")])
    third = Poll(identity, etag_of(second), wait=30).result(40)
    assert third.status_code == 200, third.text
    assert time.monotonic() - poll.started >= DELIVERY_WINDOW, "a third state went out within the window"
    urls = [
        m["value"] for c in third.json()["components"] for m in c["spec"]["metadata"] if m["name"] == "url"
    ]
    assert urls == ["http://burst.invalid/4"], "the held state is not the newest"


@pytest.mark.parametrize("wait", ["-1", "soon", "inf"])
def test_a_wait_that_is_not_seconds_is_refused_naming_it(server: ServerProcess, wait: str) -> None:
    identity, _ = paired(server, f"lp-wait-{wait.strip('-')}", "wait")
    answer = expect_status(identity.desired_state(params={"wait": wait}), 422)
    assert "wait" in answer.text
