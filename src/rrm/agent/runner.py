"""`run_agent`: the process around the loop — configuration checks, pairing, signals, logging, exit codes."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

from rrm.agent.atomic import make_private_dir
from rrm.agent.backoff import Backoff
from rrm.agent.cache import DesiredStateCache
from rrm.agent.client import DirectorClient, DirectorError, Unauthorized
from rrm.agent.config import AgentConfig, ConfigurationError
from rrm.agent.delivery import DELIVERY_MODES
from rrm.agent.health import HealthServer
from rrm.agent.identity import AgentIdentity
from rrm.agent.loop import Agent
from rrm.agent.targets import make_target

log = logging.getLogger("rrm.agent")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIGURATION = 2

T = TypeVar("T")


def run_agent(config: AgentConfig) -> int:
    """Blocks until SIGTERM/SIGINT (exit 0); 2 when the configuration or the stored identity is unusable."""
    _configure_logging(config.log_level)
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            return runner.run(_main(config))
    except ConfigurationError as exc:
        log.error("event=configuration-error error=%s", exc)
        return EXIT_CONFIGURATION


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (with uvicorn[standard], on Linux and macOS): its callbacks, timers
    and sockets cost an agent about a third less CPU than asyncio's own loop; asyncio's elsewhere."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _main(config: AgentConfig) -> int:
    _check(config)
    target = make_target(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    try:
        make_private_dir(config.state_dir)
    except OSError as exc:
        raise ConfigurationError(f"cannot use state dir {config.state_dir}: {exc}") from exc
    identity = _load_identity(config)
    urls = config.director_urls or (identity.record.director_urls if identity else [])
    if not urls:
        raise ConfigurationError("no director URL: pass --director")
    client = DirectorClient(urls, bearer=identity.bearer_token if identity else None)
    agent: Agent | None = None
    health: HealthServer | None = None
    try:
        health = await _start_health(config, lambda: agent is not None and agent.ready)
        identity = await _paired(config, client, identity, urls, stop)
        if identity is None:
            return EXIT_OK
        target.attach(identity.record.runtime_id)
        log.info(
            "event=starting runtime=%s target=%s director=%s",
            identity.record.runtime_name,
            target.name,
            client.active_url,
        )
        agent = Agent(
            client,
            target,
            DesiredStateCache(config.state_dir),
            identity,
            wait_seconds=config.wait_seconds,
            delivery=config.delivery,
            heartbeat_interval=config.heartbeat_interval,
            rotate_interval=config.rotate_interval,
            reconcile_interval=config.reconcile_interval,
            load_deadline=config.load_deadline,
            clock=client.clock.now,
        )
        try:
            await _until_stopped(stop, agent.run())
        except Exception:
            log.exception("event=crashed")
            return EXIT_FAILED
        log.info("event=stopped")
        return EXIT_OK
    finally:
        if health is not None:
            await health.close()
        await client.close()
        await target.close()


async def _paired(
    config: AgentConfig,
    client: DirectorClient,
    identity: AgentIdentity | None,
    urls: list[str],
    stop: asyncio.Event,
) -> AgentIdentity | None:
    """The identity to run with: the stored one unless the director refuses it while a token is given, else
    one paired with the token (None when stopped before pairing succeeded)."""
    if identity is not None and config.token and not await _identity_accepted(client):
        log.warning("event=identity-refused action=pairing-again-with-token")
        identity = None
    if identity is not None:
        return identity
    if not config.token:
        raise ConfigurationError(
            f"not paired yet and no pairing token: pass --token or set RRM_PAIRING_TOKEN "
            f"(state dir {config.state_dir})"
        )
    paired = await _until_stopped(stop, _pair(config, client, config.token, urls))
    if paired is not None:
        client.bearer = paired.bearer_token
    return paired


async def _identity_accepted(client: DirectorClient) -> bool:
    """A stored identity the director refuses (revoked) gives way to a pairing token given on the command
    line; when the director cannot be reached we cannot tell, and keep the identity."""
    try:
        await client.fetch_desired(None, 0)
    except Unauthorized:
        return False
    except DirectorError:
        return True
    return True


async def _start_health(config: AgentConfig, ready: Callable[[], bool]) -> HealthServer | None:
    if config.health_port is None:
        return None
    health = HealthServer(config.health_port, ready)
    try:
        await health.start()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve health endpoints on port {config.health_port}: {exc}"
        ) from exc
    return health


async def _pair(config: AgentConfig, client: DirectorClient, token: str, urls: list[str]) -> AgentIdentity:
    """Retry while no director answers; a rejected token is final (it is single-use and expires)."""
    backoff = Backoff()
    while True:
        try:
            return await AgentIdentity.pair(config.state_dir, client, token, urls)
        except Unauthorized as exc:
            raise ConfigurationError(f"pairing token rejected (unknown, used or expired): {exc}") from exc
        except DirectorError as exc:
            log.warning("event=pair-failed error=%s", exc)
        await asyncio.sleep(backoff.next_delay())


async def _until_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T | None:
    """Run `work` until it finishes or `stop` is set (then it is cancelled and None returned)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopper):
            pending.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
    if task.cancelled():
        return None
    return task.result()


def _check(config: AgentConfig) -> None:
    if config.wait_seconds < 0:
        raise ConfigurationError("--wait must not be negative")
    if not 0 < config.heartbeat_interval <= 3600:
        raise ConfigurationError("--heartbeat-interval must be in (0, 3600] seconds")
    if config.rotate_interval <= 0:
        raise ConfigurationError("--rotate-interval must be positive")
    if config.reconcile_interval <= 0:
        raise ConfigurationError("--reconcile-interval must be positive")
    if not 0 < config.load_deadline <= 3600:
        raise ConfigurationError("--load-deadline must be in (0, 3600] seconds")
    if config.restart_min_interval < 0:
        raise ConfigurationError("--restart-min-interval must not be negative")
    if config.hot_reload not in ("auto", "on", "off"):
        raise ConfigurationError(f"--hot-reload must be auto, on or off, not {config.hot_reload!r}")
    if config.delivery not in DELIVERY_MODES:
        raise ConfigurationError(f"--delivery must be auto, watch or longpoll, not {config.delivery!r}")
    if config.health_port is not None and not 0 < config.health_port < 65536:
        raise ConfigurationError("--health-port must be in 1..65535")


def _load_identity(config: AgentConfig) -> AgentIdentity | None:
    try:
        return AgentIdentity.load(config.state_dir)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"the identity in {config.state_dir} is unreadable ({exc}); remove identity.json and pair again"
        ) from exc


def _configure_logging(level: str) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("rrm").setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
