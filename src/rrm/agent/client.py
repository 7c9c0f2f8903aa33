"""The loader: talks to the directors' agent API (`/agent/v1`), failing over on connection errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import httpx

from rrm.agent.plain_http import PlainHTTPTransport
from rrm.agent.verify import state_is_authentic
from rrm.wire import watch
from rrm.wire.agent_auth import CLOCK_REFUSALS
from rrm.wire.protocol import (
    DesiredState,
    PairRequest,
    PairResponse,
    RotateChallenge,
    RotateRequest,
    RotateResponse,
    StatusReport,
    WireError,
    decode,
    dumps,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_WAIT_SECONDS = 300.0
TIMEOUT_MARGIN_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
# An idle connection is dropped after this, well before the server drops it (75 s). httpx drops it only when
# the client next sends, so it does not close a status report's connection: reports ask for `Connection:
# close` instead (`report_status`).
KEEPALIVE_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 30.0
STREAM_END_SECONDS = 1.0  # how long the end of a watch stream's response may come after its end frame
# A `Date` header has whole seconds: an offset smaller than this is no evidence that the clocks differ.
CLOCK_SKEW_TOLERANCE_SECONDS = 2.0
JSON_BODY = {"Content-Type": "application/json"}
# A report goes beside the held watch stream or long-poll, a heartbeat apart: kept open, its connection would
# double the connections (open files, memory) the control plane holds per agent until the next one.
REPORT_HEADERS = {**JSON_BODY, "Connection": "close"}


class DirectorError(Exception):
    """A call failed; whatever the agent applied stays in place and the call is retried later."""


class DirectorUnavailable(DirectorError):
    """No director answered, or the one that did failed (5xx)."""


class NothingListening(DirectorUnavailable):
    """Every director refused the connection: none is listening (one restarting). Trying again costs the
    directors nothing, so the agent retries sooner than after an answered failure."""


class Unauthorized(DirectorError):
    """401: the runtime is unknown or revoked, or the pairing token is unknown, used or expired."""


class UnexpectedResponse(DirectorError):
    """An answer the contract does not allow: wrong status, malformed body, or a state that fails its hash."""


class StreamCut(DirectorError):
    """The watch stream is not there, stayed silent or broke off without its end frame: a proxy on the way
    may buffer or cut streams. `answered`: its response headers came; `opened`: its open frame came;
    `delivered`: a frame came after it."""

    def __init__(
        self, message: str, *, answered: bool = True, opened: bool = False, delivered: bool = False
    ) -> None:
        super().__init__(message)
        self.answered, self.opened, self.delivered = answered, opened, delivered


@dataclass(frozen=True)
class StreamOpened:
    """A watch stream's open frame: the control plane's delivery window, which the agent keeps to when it
    takes states (0 from a control plane that does not announce it: the agent takes each as it comes), and
    its keep-alive interval, how often at the least the control plane counts the agent's contact."""

    delivery_window: float
    keep_alive: float


class Bearer(Protocol):
    """The JWT for authenticated calls (`AgentIdentity.bearer_token`); `renew=True` mints a fresh one, and
    `now` is the directors' present, in which it is issued."""

    def __call__(self, *, renew: bool = False, now: float | None = None) -> str: ...


class DirectorClock:
    """The directors' present as this host estimates it from the `Date` header of their answers: tokens are
    issued and expire in the directors' time, so that a host whose clock is off is not refused for it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def observe(self, date_header: str | None, sent_at: float, received_at: float) -> None:
        """Learn the offset from an answer's `Date`: the director read its clock between `sent_at` and
        `received_at` (this host's time) and wrote whole seconds, so every offset in
        [Date - received_at, Date + 1 - sent_at] fits the answer. The known offset is kept while it fits, so a
        slow answer (a busy director, a long-poll) is not taken for a clock that is off."""
        try:
            date = parsedate_to_datetime(date_header or "").timestamp()
        except (TypeError, ValueError):
            return  # no Date (a proxy may drop it): keep what was learned
        fitting = min(max(self.offset, date - received_at), date + 1 - sent_at)
        if abs(fitting - self.offset) < CLOCK_SKEW_TOLERANCE_SECONDS:
            return  # what is known already, within what the answer tells: no jitter in the tokens' times
        self.offset = fitting if abs(fitting) >= CLOCK_SKEW_TOLERANCE_SECONDS else 0.0
        log.warning("event=clock-offset offset=%+.0fs action=signing-in-director-time", self.offset)

    def describe(self) -> str:
        """A note for the status message while this host's clock is off, else ''."""
        if not self.offset:
            return ""
        way = "behind" if self.offset > 0 else "ahead of"
        return (
            f"this host's clock is about {abs(self.offset):.0f} s {way} the director's; signing in its time"
        )


class DirectorClient:
    """Async client of `/agent/v1`. `bearer` (set after pairing) returns the JWT for authenticated calls."""

    def __init__(
        self,
        director_urls: list[str],
        bearer: Bearer | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not director_urls:
            raise ValueError("at least one director URL is needed")
        self._urls = [url.rstrip("/") for url in director_urls]
        self._active = 0
        self._parsed_urls: dict[tuple[int, str], httpx.URL] = {}
        self.bearer = bearer
        self.clock = DirectorClock()
        # when (time.monotonic) a director last counted contact (`last_seen`) without a status report: a
        # long-poll it answered (as of the request, which is when it counts it), a frame after a watch
        # stream's opening
        self.heard_at = -math.inf
        verify = tls_verification(self._urls)
        limits = httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS)
        if transport is None and isinstance(verify, ssl.SSLContext):  # plain HTTP only, no proxy
            transport = PlainHTTPTransport(KEEPALIVE_SECONDS)
        self._http = httpx.AsyncClient(
            transport=transport,
            verify=verify,
            timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
            limits=limits,
        )

    @property
    def active_url(self) -> str:
        return self._urls[self._active]

    async def close(self) -> None:
        await self._http.aclose()

    async def fetch_desired(self, etag: str | None, wait: float) -> DesiredState | None:
        """The desired state, or None when it is still `etag` (304) after at most `wait` seconds."""
        wait = max(0.0, min(wait, MAX_WAIT_SECONDS))
        headers = {"If-None-Match": f'"{etag}"'} if etag else {}
        asked_at = time.monotonic()  # the control plane counts the contact when the request arrives
        response = await self._send(
            "GET",
            "/agent/v1/desired-state",
            params={"wait": f"{wait:g}"},
            headers=headers,
            timeout=httpx.Timeout(wait + TIMEOUT_MARGIN_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
        )
        if response.status_code in (200, 304):
            self.heard_at = asked_at
        if response.status_code == 304:
            return None
        _expect(response, 200)
        state = _parse(DesiredState, response)
        if not state_is_authentic(state):
            raise UnexpectedResponse(f"desired state {state.hash[:12]} does not match its content; ignored")
        return state

    async def watch_desired(
        self, etag: str | None, first_frame_timeout: float
    ) -> AsyncIterator[StreamOpened | DesiredState]:
        """The stream's opening, then each new verified desired state it carries (the first one at once when
        it is not `etag`); ends when the director ends the stream. Opened with a fresh token, which the stream
        lives as long as; `StreamCut` when no frame comes within `first_frame_timeout` s, or the stream breaks
        off. Frames are timed as they are read: a caller that reads late makes a stream look silent."""
        if self.bearer is None:
            raise Unauthorized("no runtime identity to sign the request with")
        headers = {"Authorization": f"Bearer {self.bearer(renew=True, now=self.clock.now())}"}
        if etag:
            headers["If-None-Match"] = f'"{etag}"'
        timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT_SECONDS)  # silence is timed per frame below
        request = self._http.build_request(
            "GET", self.active_url + watch.PATH, headers=headers, timeout=timeout
        )
        sent_at = time.time()
        try:
            async with asyncio.timeout(first_frame_timeout):  # held back by a proxy, or a busy director
                response = await self._http.send(request, stream=True)
        except TimeoutError:
            raise StreamCut(
                f"GET {watch.PATH}: no answer for {first_frame_timeout:g} s", answered=False
            ) from None
        except httpx.TransportError as exc:
            self._active = (self._active + 1) % len(self._urls)  # the next stream tries the next director
            unavailable = NothingListening if isinstance(exc, httpx.ConnectError) else DirectorUnavailable
            raise unavailable(f"GET {watch.PATH}: {type(exc).__name__}: {exc}") from exc
        try:
            self.clock.observe(response.headers.get("date"), sent_at, time.time())
            await _expect_stream(response)
            async for item in _watched_states(response, first_frame_timeout, self._heard):
                yield item
        finally:
            await response.aclose()

    def _heard(self) -> None:
        self.heard_at = time.monotonic()

    async def report_status(self, report: StatusReport) -> None:
        """Send `report` on a connection closed after the answer."""
        response = await self._send("PUT", "/agent/v1/status", headers=REPORT_HEADERS, content=dumps(report))
        _expect(response, 200, 204)

    async def pair(self, request: PairRequest) -> PairResponse:
        response = await self._send(
            "POST", "/agent/v1/pair", headers=JSON_BODY, content=dumps(request), authenticated=False
        )
        _expect(response, 200, 201)
        return _parse(PairResponse, response)

    async def rotation_challenge(self) -> RotateChallenge:
        response = await self._send("POST", "/agent/v1/rotate/challenge")
        _expect(response, 200)
        return _parse(RotateChallenge, response)

    async def rotate(self, request: RotateRequest) -> RotateResponse:
        response = await self._send("POST", "/agent/v1/rotate", headers=JSON_BODY, content=dumps(request))
        _expect(response, 200)
        return _parse(RotateResponse, response)

    async def accepts(self, token: str) -> bool:
        """Whether the directors take `token` (False for a 401 about its key, not its time), asked with a
        rotation challenge, which changes nothing: it tells which key they hold when a rotation's answer was
        lost."""
        headers = {"Authorization": f"Bearer {token}"}
        response = await self._send_once("POST", "/agent/v1/rotate/challenge", headers, None, {})
        if response.status_code == 401 and not _refused_for_time(response):
            return False
        if response.status_code >= 500:
            raise DirectorUnavailable(f"POST /agent/v1/rotate/challenge: {response.status_code}")
        _expect(response, 200)
        return True

    def _url(self, index: int, path: str) -> httpx.URL:
        """`path` on director `index`, parsed once: httpx parses a URL given as text on every request, a
        tenth of a status report's CPU."""
        key = (index, path)
        url = self._parsed_urls.get(key)
        if url is None:
            url = self._parsed_urls[key] = httpx.URL(self._urls[index] + path)
        return url

    async def _request_once_retried(
        self, method: str, url: httpx.URL, headers: dict[str, str], timeout: httpx.Timeout | None, kwargs: Any
    ) -> httpx.Response:
        """A reused connection the server closed meanwhile fails at once; every agent call is idempotent,
        so it is sent again right away, on a fresh connection, instead of waiting out a backoff."""
        for attempt in (1, 2):
            try:
                return await self._http.request(
                    method, url, headers=headers, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kwargs
                )
            except (httpx.RemoteProtocolError, httpx.ReadError):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _send(
        self,
        method: str,
        path: str,
        *,
        authenticated: bool = True,
        headers: dict[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send to the directors (see `_send_once`); a token the director found expired (it was held up
        longer than its lifetime) or not yet valid (this host's clock was off, and the answer tells the
        director's time) is renewed and the request sent again, once and at once."""
        headers = dict(headers or {})
        if authenticated:
            if self.bearer is None:
                raise Unauthorized("no runtime identity to sign the request with")
            headers["Authorization"] = f"Bearer {self.bearer(now=self.clock.now())}"
        response = await self._send_once(method, path, headers, timeout, kwargs)
        if authenticated and self.bearer is not None and _refused_for_time(response):
            log.warning(
                "event=token-refused reason=%r method=%s path=%s action=renewing-and-retrying",
                _detail(response),
                method,
                path,
            )
            headers["Authorization"] = f"Bearer {self.bearer(renew=True, now=self.clock.now())}"
            response = await self._send_once(method, path, headers, timeout, kwargs)
        if response.status_code == 401:
            raise Unauthorized(f"{method} {path}: 401 {_detail(response)}{self._clock_hint(response)}")
        if response.status_code >= 500:
            raise DirectorUnavailable(f"{method} {path}: {response.status_code} {_detail(response)}")
        return response

    def _clock_hint(self, response: httpx.Response) -> str:
        """For a 401 that is about time: say that it is this host's clock, and by how much it is off."""
        if not _refused_for_time(response):
            return ""
        return (
            f" (refused for its time: this host's clock is off; the offset to the director's, from its Date"
            f" header, is {self.clock.offset:+.0f} s)"
        )

    async def _send_once(
        self, method: str, path: str, headers: dict[str, str], timeout: httpx.Timeout | None, kwargs: Any
    ) -> httpx.Response:
        """Try the directors in order from the last one that answered; stick to whichever answers now."""
        failures: list[str] = []
        refused = True
        for offset in range(len(self._urls)):
            index = (self._active + offset) % len(self._urls)
            url = self._url(index, path)
            sent_at = time.time()
            try:
                response = await self._request_once_retried(method, url, headers, timeout, kwargs)
            except httpx.TransportError as exc:
                failures.append(f"{self._urls[index]}: {type(exc).__name__}: {exc}")
                refused = refused and isinstance(exc, httpx.ConnectError)
                continue
            self.clock.observe(response.headers.get("date"), sent_at, time.time())
            if index != self._active:
                log.info("event=director-switched url=%s", self._urls[index])
                self._active = index
            return response
        unavailable = NothingListening if refused else DirectorUnavailable
        raise unavailable("no director reachable: " + "; ".join(failures))


def tls_verification(urls: Iterable[str]) -> ssl.SSLContext | bool:
    """httpx's default (verify against its CA bundle) wherever TLS may be spoken: an https URL, or any proxy
    from the environment. Otherwise a context that trusts no CA, so would refuse any TLS connection, and none
    is made: it spares loading the CA bundle, about 1 MB that a plain-HTTP agent would hold for nothing."""
    if any(url.lower().startswith("https:") for url in urls) or urllib.request.getproxies():
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


async def _expect_stream(response: httpx.Response) -> None:
    """A watch stream's answer, or the error its status tells; anything but an event stream (a proxy's own
    page, a director without the endpoint) counts as cut."""
    if response.status_code == 200 and response.headers.get("content-type", "").startswith(watch.MEDIA_TYPE):
        return
    await response.aread()
    if response.status_code == 401:
        raise Unauthorized(f"GET {watch.PATH}: 401 {_detail(response)}")
    if response.status_code >= 500:
        raise DirectorUnavailable(f"GET {watch.PATH}: {response.status_code} {_detail(response)}")
    raise StreamCut(f"GET {watch.PATH}: {response.status_code} {response.headers.get('content-type', '')}")


async def _watched_states(
    response: httpx.Response, first_frame_timeout: float, heard: Callable[[], None]
) -> AsyncIterator[StreamOpened | DesiredState]:
    """The opening and the states of an open stream, verified; returns at its end frame, `StreamCut`
    without one. `heard` is called for every frame after the opening (the control plane counts each of
    those, not the opening, as the agent's contact)."""
    reader, chunks = watch.FrameReader(), response.aiter_bytes()
    opened = delivered = False
    silence = first_frame_timeout
    while True:
        try:
            async with asyncio.timeout(silence):
                chunk = await anext(chunks)
        except (StopAsyncIteration, TimeoutError, httpx.TransportError) as exc:
            what = f"no frame for {silence:g} s" if isinstance(exc, TimeoutError) else "the stream broke off"
            raise StreamCut(f"GET {watch.PATH}: {what}", opened=opened, delivered=delivered) from None
        try:
            frames = reader.feed(chunk)
        except watch.FrameError as exc:
            raise UnexpectedResponse(f"GET {watch.PATH}: {exc}") from None
        for frame in frames:
            if frame.event == "open":
                keep_alive, window = _opening(frame)
                opened, silence = True, 2 * keep_alive + TIMEOUT_MARGIN_SECONDS
                yield StreamOpened(window, keep_alive)
                continue
            heard()
            if frame.event == "end":
                log.info("event=watch-ended reason=%s", _end_reason(frame))
                await _read_to_the_end(chunks)
                return
            else:
                delivered = True
                if frame.event == "state":
                    yield _verified(frame)


async def _read_to_the_end(chunks: AsyncIterator[bytes]) -> None:
    """The response ends right after its end frame: read that end, so its connection is kept and the next
    stream opens on it (a new connection every stream, one per agent every token lifetime, cost the control
    plane an accept and a close each). Anything else comes after it, or nothing within
    `STREAM_END_SECONDS`: the connection is closed, as before."""
    with contextlib.suppress(StopAsyncIteration, TimeoutError, httpx.TransportError):
        async with asyncio.timeout(STREAM_END_SECONDS):
            while not await anext(chunks):
                pass


def _opening(frame: watch.Frame) -> tuple[float, float]:
    """The open frame's keep-alive interval (two of them and a margin without a frame, the stream is cut)
    and delivery window (0 when the control plane does not announce one)."""
    try:
        fields = json.loads(frame.data)
        return float(fields["keep_alive"]), max(0.0, float(fields.get("delivery_window", 0.0)))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UnexpectedResponse(f"GET {watch.PATH}: a malformed open frame: {frame.data[:80]!r}") from None


def _end_reason(frame: watch.Frame) -> str:
    try:
        return str(json.loads(frame.data)["reason"])
    except (ValueError, KeyError, TypeError):
        return "?"


def _verified(frame: watch.Frame) -> DesiredState:
    try:
        state = decode(DesiredState, frame.data)
    except WireError as exc:
        raise UnexpectedResponse(f"malformed DesiredState on the watch stream: {exc}") from exc
    if state.hash != frame.id or not state_is_authentic(state):
        raise UnexpectedResponse(f"desired state {state.hash[:12]} does not match its content; ignored")
    return state


def _expect(response: httpx.Response, *statuses: int) -> None:
    if response.status_code not in statuses:
        request = response.request
        raise UnexpectedResponse(
            f"{request.method} {request.url.path}: {response.status_code} {_detail(response)}"
        )


def _parse(kind: type[T], response: httpx.Response) -> T:
    try:
        return decode(kind, response.content)
    except WireError as exc:
        raise UnexpectedResponse(f"malformed {kind.__name__}: {exc}") from exc


def _refused_for_time(response: httpx.Response) -> bool:
    """A 401 for a token expired or not yet valid, as opposed to one for a revoked or unknown runtime
    (re-pairing helps there, a fresh token does not)."""
    return response.status_code == 401 and any(reason in _detail(response) for reason in CLOCK_REFUSALS)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("detail", ""))[:200] if isinstance(body, dict) else str(body)[:200]
