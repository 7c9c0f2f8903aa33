"""Delivery on the watch stream: every new state written on one open response, keep-alives while nothing
changes, a clean end when the token expires or the server stops (and the agent opens it again), only the
runtime's own states on its stream, an agent that fell behind taking at most one state per delivery window
(the newest), and the long-poll where a proxy buffers the stream."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from rrm.wire.watch import PATH, Frame, FrameReader

from .buffering_proxy import BufferingProxy
from .harness import (
    AgentIdentity,
    Fleet,
    ServerProcess,
    apply,
    etag_of,
    expect_status,
    http_binding,
    metadata_value,
    pair,
    register,
    synced,
    wait_until,
)

pytestmark = pytest.mark.integration
KEEP_ALIVE_SECONDS = 30.0  # rrm server --watch-keep-alive, at its default
DELIVERY_WINDOW = 1.0  # rrm server --delivery-window, at its default
TAKE = re.compile(r"^(\S+ \S+) INFO rrm\.agent\.loop event=fetched hash=(\w+)", re.M)


def metric(admin: httpx.Client, name: str) -> float:
    """The sum of every sample of `name` (with its labels, if given) in /metrics."""
    text = expect_status(admin.get("/metrics"), 200).text
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(m.group(2)) for m in pattern.finditer(text))


def long_poll_answers(admin: httpx.Client) -> float:
    return metric(admin, "rrm_desired_state_responses_total")


def url_is(version: str):  # type: ignore[no-untyped-def]
    return lambda c: metadata_value(c.get("watch-web", {}), "url") == f"http://watch.invalid/{version}"


def test_an_agent_on_the_stream_gets_each_update_without_a_new_request(fleet: Fleet) -> None:
    admin = fleet.server.admin
    agent = fleet.agent("watch-push", {"t-watch": "push"})
    fleet.wait_runtime("watch-push", synced, "Synced")
    fleet.wait_until(lambda: metric(admin, "rrm_watch_streams") >= 1, "the agent's watch stream to open")
    answers = long_poll_answers(admin)
    frames = metric(admin, 'rrm_watch_frames_total{kind="state"}')

    for version in ("1", "2", "3"):
        apply(admin, [http_binding("watch-web", "t-watch=push", f"http://watch.invalid/{version}")])
        fleet.wait_files(agent, url_is(version), f"version {version} reaches the agent")
    assert long_poll_answers(admin) == answers, "the agent sent a desired-state request"
    assert metric(admin, 'rrm_watch_frames_total{kind="state"}') >= frames + 3


def takes(agent_log: str) -> list[tuple[float, str]]:
    """When the agent took each state (its log's time, to the millisecond), and the state's short hash."""
    return [(datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f").timestamp(), h) for t, h in TAKE.findall(agent_log)]


def state_frames(admin: httpx.Client) -> float:
    return metric(admin, 'rrm_watch_frames_total{kind="state"}')


def state_frames_reach(admin: httpx.Client, count: float) -> Callable[[], bool]:
    return lambda: state_frames(admin) >= count


def test_an_agent_that_fell_behind_takes_the_newest_state_at_most_once_per_window(fleet: Fleet) -> None:
    """Frames pile up in the socket of an agent that does not read (stopped, as a busy host stops it): when
    it runs again it finds them all at once, takes the newest, drops those it superseded unapplied, takes no
    two states within a delivery window, and ends on the final state."""
    admin = fleet.server.admin
    agent = fleet.agent("watch-behind", {"t-watch": "behind"})
    fleet.wait_runtime("watch-behind", synced, "Synced")
    fleet.wait_until(lambda: metric(admin, "rrm_watch_streams") >= 1, "the agent's watch stream to open")
    frames = state_frames(admin)

    os.kill(agent.pid, signal.SIGSTOP)
    try:
        for version in range(1, 5):  # each written once its predecessor's frame is: four frames waiting
            apply(admin, [http_binding("watch-web", "t-watch=behind", f"http://watch.invalid/{version}")])
            fleet.wait_until(
                state_frames_reach(admin, frames + version),
                f"the frame of version {version} written to the stopped agent's stream",
            )
    finally:
        os.kill(agent.pid, signal.SIGCONT)

    fleet.wait_files(agent, url_is("4"), "the final state reaches the agent")
    fleet.wait_runtime("watch-behind", synced, "Synced on the final state")
    log = agent.log_path.read_text()
    taken = takes(log)
    assert "event=superseded" in log, f"every state waiting was taken, none superseded: {taken}"
    assert len(taken) >= 2, taken
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(taken)]
    assert min(gaps) >= DELIVERY_WINDOW - 0.002, f"two takes within a window: {taken}"  # log times: ms
    superseded = set(re.findall(r"event=superseded hash=(\w+)", log))
    assert not superseded & {h for _, h in taken}, "a superseded state was applied"


class Watch:
    """One raw watch stream read in a thread: its frames with when each came."""

    def __init__(self, identity: AgentIdentity, etag: str, lifetime: float) -> None:
        self.frames: list[tuple[float, Frame]] = []
        self.status = 0
        self.ended_cleanly = False
        headers = {**identity.headers(lifetime=lifetime), "If-None-Match": f'"{etag}"'}
        self._thread = threading.Thread(target=self._run, args=(identity.server_url, headers), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        reader = FrameReader()
        with httpx.stream("GET", url + PATH, headers=headers, timeout=60) as response:
            self.status = response.status_code
            for chunk in response.iter_raw():
                self.frames += [(time.monotonic(), frame) for frame in reader.feed(chunk)]
            self.ended_cleanly = not reader.pending

    def events(self) -> list[str]:
        return [frame.event for _, frame in self.frames]

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the stream did not end within {timeout} s: {self.events()}"


def paired(server: ServerProcess, name: str, label: str) -> tuple[AgentIdentity, str]:
    identity = pair(server.url, register(server.admin, name, labels={"t-watch": label}))
    return identity, etag_of(expect_status(identity.desired_state(), 200))


def test_a_stream_carries_only_its_runtime_s_states_keeps_alive_and_ends_with_its_token(
    server: ServerProcess,
) -> None:
    a, a_etag = paired(server, "watch-a", "a")
    b, b_etag = paired(server, "watch-b", "b")
    on_a = Watch(a, a_etag, lifetime=KEEP_ALIVE_SECONDS + 5)
    on_b = Watch(b, b_etag, lifetime=60)
    wait_until(lambda: on_a.events()[:1] == ["open"] and on_b.events()[:1] == ["open"], 10, "open frames")
    opening = json.loads(on_a.frames[0][1].data)
    assert opening["delivery_window"] == DELIVERY_WINDOW, "the agent keeps to the window it is told"

    apply(server.admin, [http_binding("watch-only-b", "t-watch=b", "http://b.invalid/")])
    wait_until(lambda: "state" in on_b.events(), 20, "B's new state on B's stream")
    (state,) = [frame for _, frame in on_b.frames if frame.event == "state"]
    body = json.loads(state.data)
    assert [c["metadata"]["name"] for c in body["components"]] == ["watch-only-b"]
    assert state.id == body["hash"] == etag_of(expect_status(b.desired_state(), 200))

    on_a.join(KEEP_ALIVE_SECONDS + 20)
    assert on_a.status == 200 and on_a.ended_cleanly
    assert on_a.events()[0] == "open" and on_a.events()[-1] == "end", on_a.events()
    assert "state" not in on_a.events(), "B's change was written on A's stream"
    assert "keep-alive" in on_a.events(), "no keep-alive while nothing changed"
    assert json.loads(on_a.frames[-1][1].data) == {"reason": "token-expired"}


def test_a_stream_opened_with_an_expired_token_is_refused(server: ServerProcess) -> None:
    identity, _ = paired(server, "watch-expired", "expired")
    expired = identity.headers(lifetime=-60)  # within the verifier's leeway, but nothing left to stream
    answer = httpx.get(server.url + PATH, headers=expired, timeout=30)
    assert answer.status_code == 401 and "expired" in answer.text, answer.text


def test_a_server_restart_ends_the_streams_and_the_agents_come_back_on_the_stream(
    own_server: ServerProcess, fleet: Fleet
) -> None:
    agent = fleet.agent("watch-restart", {"t-watch": "restart"})
    fleet.wait_runtime("watch-restart", synced, "Synced")
    fleet.wait_until(lambda: metric(own_server.admin, "rrm_watch_streams") >= 1, "the stream to open")

    own_server.stop()
    log = own_server.log_path.read_text()
    assert "graceful shutdown exceeded" not in log, "an open stream held the shutdown up"
    own_server.start()
    fleet.wait_until(lambda: metric(own_server.admin, "rrm_watch_streams") >= 1, "the stream to reopen")
    apply(own_server.admin, [http_binding("watch-web", "t-watch=restart", "http://watch.invalid/r")])
    fleet.wait_files(agent, url_is("r"), "the change after the restart reaches the agent")
    assert long_poll_answers(own_server.admin) == 0, "the agent came back on the long-poll, not the stream"
    assert "reason=shutdown" in agent.log_path.read_text()


def test_behind_a_proxy_that_buffers_streams_the_agent_falls_back_to_the_long_poll(
    server: ServerProcess, fleet: Fleet, tmp_path: Path
) -> None:
    proxy = BufferingProxy(server.port)
    proxy.start()
    try:
        token = register(server.admin, "watch-proxied", labels={"t-watch": "proxied"})
        agent = fleet.agent_process("watch-proxied", wait=5)  # nothing changes during its long-poll
        agent.director_url = proxy.url
        agent.start(token)
        fleet.wait_runtime("watch-proxied", synced, "Synced through the proxy")
        fleet.wait_until(lambda: "event=watch-fallback" in agent.log_path.read_text(), "the fallback", 60)

        apply(server.admin, [http_binding("watch-web", "t-watch=proxied", "http://watch.invalid/p")])
        fleet.wait_files(agent, url_is("p"), "the change reaches the agent through the proxy")
        watched = [r for r in proxy.requests if r.startswith(f"GET {PATH}")]
        long_polls = [r for r in proxy.requests if "/desired-state?wait=" in r and "wait=0 " not in r]
        assert watched and long_polls, proxy.requests
    finally:
        proxy.stop()


def test_a_revoked_runtime_s_stream_ends_without_carrying_another_state(server: ServerProcess) -> None:
    identity, etag = paired(server, "watch-revoked", "revoked")
    stream = Watch(identity, etag, lifetime=60)
    wait_until(lambda: stream.events()[:1] == ["open"], 10, "the open frame")
    expect_status(server.admin.post("/api/v1/runtimes/watch-revoked/revoke"), 200)
    apply(server.admin, [http_binding("watch-after-revoke", "t-watch=revoked", "http://revoked.invalid/")])
    stream.join(KEEP_ALIVE_SECONDS + 20)
    assert "state" not in stream.events(), "a state went out on a revoked runtime's stream"
    assert json.loads(stream.frames[-1][1].data) == {"reason": "runtime-gone"}
