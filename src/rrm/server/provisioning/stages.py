"""The stages of each operation type, and what one attempt of each does.

Every stage is idempotent: the engine may run it again after a crash at any point, and a stage finds what an
earlier attempt already did (the runtime registered, the account claimed) and carries on from there. A stage
answers an `Outcome` (`rrm.core.operations`); a backend's `RetryLater` becomes a retry, `BackendFailure` a
failure. Writes a stage makes (the runtime, what it claimed) are committed by the stage itself, before it
answers, or, when they only record what the stage did (the account claimed, the kubeconfig fetched), in
the engine's transaction that records the attempt's outcome: either way the engine's record of the stage
never runs ahead of what was done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from rrm.core.conditions import Observed, connected
from rrm.core.operations import (
    DEPROVISION,
    PROVISION,
    RESUME,
    SUSPEND,
    Done,
    Fail,
    Outcome,
    Retry,
    Stage,
    Wait,
    progress_description,
)
from rrm.core.scenarios import DEFAULT_SCENARIO
from rrm.server.auth import PAIRING_TOKEN_PREFIX, new_token, token_hash
from rrm.server.provisioning.accounts import AccountClaim
from rrm.server.provisioning.backends.base import (
    AgentInstall,
    Backend,
    BackendFailure,
    ClusterRequest,
    RetryLater,
)
from rrm.server.provisioning.catalog import Catalog
from rrm.server.provisioning.group_commit import GroupCommit
from rrm.server.provisioning.plans import Plan, parameter_problems
from rrm.server.registration import add_runtime
from rrm.server.state import ServerState
from rrm.store import provisioning as store
from rrm.store import repositories as repo
from rrm.store.tables import EnvironmentRow

# the longest wait between two looks; wait_for_connection is woken by the agent's first report
# (AGENT_WAITS), its poll is the fallback for a report that came before the engine looked at the operation
# (a restart, a new leader)
POLL_SECONDS = {"wait_for_cluster": 10.0, "wait_for_deletion": 10.0, "wait_for_connection": 30.0}
FIRST_LOOK_SECONDS = 1.0  # the cluster waits look again this soon after their first look
AGENT_WAITS = frozenset({"wait_for_connection"})  # stages the engine runs again when the agent reports
# stages that do nothing outside the engine's record (no backend call, no write): their first attempt's
# start is stored with its outcome, not committed alone before it (a crash between the two leaves nothing
# to find, and the attempt is over before any deadline could matter)
STARTED_WITH_OUTCOME = frozenset({"validate"})
CLUSTER_KUBECONFIG = "__cluster_kubeconfig"  # in the sealed blob, beside the secret parameters
LABEL_PREFIX = "rrm.io/"
BEST_EFFORT = {"remove_agent", "release_account", "delete_runtime"}
# what a finished provisioning stage leaves when the operation fails later on
LEAVES = {
    "claim_account": "the claimed account",
    "register_runtime": "the runtime",
    "create_cluster": "the cluster",
    "install_agent": "the agent",
}


@dataclass(frozen=True)
class Subject:
    """An environment as one stage attempt sees it (secret parameters decrypted)."""

    id: str
    name: str
    plan: str
    region: str | None
    labels: dict[str, str]
    parameters: dict[str, Any]
    global_account: str | None
    subaccount: str | None
    runtime_id: str | None
    data: dict[str, Any]
    cluster_kubeconfig: str | None = None
    secret: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Attempt:
    """One attempt of one stage: everything it needs, read before it starts."""

    state: ServerState
    catalog: Catalog
    plan: Plan
    backend: Backend
    subject: Subject
    operation_id: str
    request: dict[str, Any]
    stage: Stage
    now: datetime
    writes: GroupCommit | None = None  # the engine's: its attempts' writes share commits
    # the engine's attempts: what the stage did, for the transaction that records its outcome
    with_outcome: list[Callable[[Session], None]] | None = None

    @property
    def cluster_request(self) -> ClusterRequest:
        s = self.subject
        return ClusterRequest(
            environment=s.name,
            environment_id=s.id,
            operation_id=self.operation_id,
            plan=s.plan,
            region=s.region,
            parameters=s.parameters,
            global_account=s.global_account,
            subaccount=s.subaccount,
            account=s.data.get("account"),
        )


def planned_stages(operation_type: str, plan: Plan, backend: Backend) -> list[Stage]:
    """The stages of one operation on this plan, in order; stages that do not apply are left out."""
    creates, pool = backend.creates_clusters, plan.account_pool is not None
    provision = [
        "validate",
        *(["claim_account"] if pool else []),
        "register_runtime",
        *(["create_cluster", "wait_for_cluster"] if creates else []),
        "fetch_kubeconfig",
        "install_agent",
        "wait_for_connection",
    ]
    suspend = [
        "remove_agent",
        *(["delete_cluster", "wait_for_deletion"] if creates else []),
        *(["release_account"] if pool else []),
        "delete_runtime",
    ]
    names = {
        PROVISION: provision,
        RESUME: provision,
        SUSPEND: suspend,
        DEPROVISION: [*suspend, "archive"],
    }.get(operation_type, ["update_runtime", "update_cluster"])
    return [Stage(name=n, best_effort=n in BEST_EFFORT, deadline_seconds=plan.deadline(n)) for n in names]


def run_stage(attempt: Attempt) -> Outcome:
    """One attempt; what the backend raises becomes the outcome."""
    try:
        return STAGES[attempt.stage.name](attempt)
    except RetryLater as exc:
        return Retry(str(exc) or type(exc).__name__)
    except BackendFailure as exc:
        return Fail(str(exc) or type(exc).__name__)


def runtime_labels(subject: Subject) -> dict[str, str]:
    """The request's labels plus the ones naming where the runtime came from."""
    own = {
        "environment": subject.name,
        "plan": subject.plan,
        "region": subject.region,
        "global-account": subject.global_account,
        "subaccount": subject.subaccount,
    }
    return {**subject.labels, **{LABEL_PREFIX + k: v for k, v in own.items() if v}}


def runtime_kind(backend: Backend) -> str:
    return "selfhosted" if backend.name == "local" else "kubernetes"


def _write(attempt: Attempt, work: Callable[[Session], Any]) -> Any:
    if attempt.writes is not None:
        return attempt.writes.write(work)
    with attempt.state.db.write() as session:
        return work(session)


def _store_with_outcome(attempt: Attempt, work: Callable[[Session], None]) -> None:
    """What the stage did, stored in the engine's transaction that records the attempt's outcome (never
    before it nor without it, and one commit fewer on the operation's way: each costs a turn at the single
    writer); at once when no engine records this attempt (the sweep)."""
    if attempt.with_outcome is None:
        _write(attempt, work)
    else:
        attempt.with_outcome.append(work)


def _environment(session: Session, attempt: Attempt) -> EnvironmentRow:
    row = store.environment(session, attempt.subject.id)
    assert row is not None, f"environment {attempt.subject.id} vanished"
    return row


# provisioning -----------------------------------------------------------------------------------------


def validate(attempt: Attempt) -> Outcome:
    problems = parameter_problems(attempt.plan, attempt.subject.parameters)
    refusal = attempt.catalog.refusals.get(attempt.backend.name)
    if refusal:
        return Fail(refusal)
    if problems:
        return Fail("; ".join(f"{f}: {m}" for f, m in problems))
    return Done(f"plan {attempt.plan.name}, backend {attempt.backend.name}")


def claim_account(attempt: Attempt) -> Outcome:
    if attempt.subject.data.get("account"):
        return Done(f"account {attempt.subject.data['account']}")
    assert attempt.plan.account_pool is not None
    pool = attempt.catalog.account_pools[attempt.plan.account_pool]
    claim = AccountClaim(
        plan=attempt.plan.name,
        platform_region=attempt.subject.data.get("platformRegion"),
        region=attempt.subject.region,
        global_account=attempt.subject.global_account or "",
        environment=attempt.subject.name,
    )
    binding = pool.claim(claim)

    def record(session: Session) -> None:
        row = _environment(session, attempt)
        row.data = {**row.data, "account": binding}

    _store_with_outcome(attempt, record)
    return Done(f"account {binding}")


def register_runtime(attempt: Attempt) -> Outcome:
    """The runtime of the environment's name, labelled; its pairing token comes with the agent's install,
    so a cluster that takes an hour to build never finds its token expired."""
    subject, kind = attempt.subject, runtime_kind(attempt.backend)

    def work(session: Session) -> Outcome:
        existing = repo.runtime_by_name(session, subject.name)
        if existing is not None:
            if existing.id == subject.runtime_id:
                return Done(f"runtime {subject.name}")
            return Fail(f"a runtime named {subject.name} exists and does not belong to this environment")
        labels, detail = runtime_labels(subject), f"by environment {subject.name}"
        row = add_runtime(session, subject.name, kind, labels, [DEFAULT_SCENARIO], attempt.now, detail)
        _environment(session, attempt).runtime_id = row.id
        return Done(f"runtime {subject.name} ({kind})")

    outcome: Outcome = _write(attempt, work)
    return outcome


def create_cluster(attempt: Attempt) -> Outcome:
    attempt.backend.create_cluster(attempt.cluster_request)
    return Done("cluster requested")


def wait_for_cluster(attempt: Attempt) -> Outcome:
    return _follow(attempt, attempt.backend.cluster_progress, "waiting for the cluster")


def wait_for_deletion(attempt: Attempt) -> Outcome:
    return _follow(attempt, attempt.backend.deletion_progress, "waiting until the cluster is gone")


def _follow(attempt: Attempt, look: Callable[[ClusterRequest], Any], what: str) -> Outcome:
    progress = look(attempt.cluster_request)
    if progress.failed:
        return Fail(progress.failed)
    if progress.done:
        return Done(progress.description)
    detail = progress.description + (f" {progress.percent}%" if progress.percent is not None else "")
    started = attempt.stage.started_at or attempt.now
    expected = attempt.plan.expected.get(attempt.stage.name)
    description = progress_description(what, started, attempt.now, expected, detail)
    return Wait(description, next_look(attempt.stage.name, (attempt.now - started).total_seconds()))


def next_look(stage: str, waited_seconds: float) -> float:
    """Seconds until a cluster wait looks again: half the time waited so far, from FIRST_LOOK_SECONDS up to
    the stage's poll. A cluster that is up (or gone) within seconds of its request is seen within a second
    of it, not up to a whole poll later; one that takes Gardener's half hour is looked at every poll as
    before, a handful of looks more in its first minute."""
    return min(POLL_SECONDS[stage], max(FIRST_LOOK_SECONDS, waited_seconds / 2))


def fetch_kubeconfig(attempt: Attempt) -> Outcome:
    kubeconfig = attempt.backend.kubeconfig(attempt.cluster_request)

    def record(session: Session) -> None:
        row = _environment(session, attempt)
        secret = {**attempt.subject.secret, CLUSTER_KUBECONFIG: kubeconfig}
        row.sealed = attempt.state.box.seal(sealed_name(row.id), secret)

    _store_with_outcome(attempt, record)
    return Done("kubeconfig stored (encrypted)" if kubeconfig else "no kubeconfig needed")


def install_agent(attempt: Attempt) -> Outcome:
    """A fresh pairing token each attempt (an agent that paired already keeps its key and ignores it)."""
    subject = attempt.subject
    if subject.runtime_id is None:
        return Fail("the environment has no runtime (register_runtime did not run)")
    token = new_token(PAIRING_TOKEN_PREFIX)
    ttl = attempt.state.settings.pairing_ttl_seconds

    def issue(session: Session) -> None:
        expires = attempt.now + timedelta(seconds=ttl)
        repo.add_pairing_token(session, subject.runtime_id or "", token_hash(token), expires, attempt.now)
        repo.record_event(
            session,
            "PairingTokenIssued",
            f"runtime/{subject.name}",
            f"for the agent's install, expires {expires.isoformat()}",
            attempt.now,
        )

    _write(attempt, issue)
    options = {k: v for k, v in subject.parameters.items() if k not in attempt.plan.secret}
    install = AgentInstall(director_url(attempt.state), subject.name, token, options)
    attempt.backend.install_agent(attempt.cluster_request, subject.cluster_kubeconfig or "", install)
    return Done(f"agent installed, pointed at {install.director_url}")


def director_url(state: ServerState) -> str:
    settings = state.settings
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def wait_for_connection(attempt: Attempt) -> Outcome:
    subject = attempt.subject
    with attempt.state.db.read() as session:
        status = repo.status_of(session, subject.runtime_id or "")
    observed = (
        None
        if status is None
        else Observed(status.last_seen, status.heartbeat_interval, status.applied_hash, {})
    )
    condition = connected(observed, attempt.now, attempt.state.settings.heartbeat_grace)
    if condition.status == "True":
        return Done(f"runtime {subject.name} is Connected")
    started = attempt.stage.started_at or attempt.now
    what = f"waiting for the agent of {subject.name} to connect ({condition.message})"
    return Wait(progress_description(what, started, attempt.now, None), POLL_SECONDS["wait_for_connection"])


# update -----------------------------------------------------------------------------------------------


def update_runtime(attempt: Attempt) -> Outcome:
    subject = attempt.subject

    def work(session: Session) -> str:
        row = repo.runtime_by_id(session, subject.runtime_id or "")
        if row is None:
            return "no runtime to relabel"
        labels = runtime_labels(subject)
        if labels != row.labels:
            row.labels, row.updated_at = labels, attempt.now
            repo.record_change(session, repo.ENTITY_RUNTIME, row.id, attempt.now)
            message = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
            repo.record_event(session, "RuntimeLabelled", f"runtime/{row.name}", message, attempt.now)
        return f"runtime {row.name} labelled"

    return Done(_write(attempt, work))


def update_cluster(attempt: Attempt) -> Outcome:
    update = getattr(attempt.backend, "update_cluster", None)
    if update is None:
        return Done(f"the {attempt.backend.name} backend has nothing to update; parameters stored")
    update(attempt.cluster_request)
    return Done("cluster updated")


# deprovisioning ---------------------------------------------------------------------------------------


def remove_agent(attempt: Attempt) -> Outcome:
    attempt.backend.remove_agent(attempt.cluster_request, attempt.subject.cluster_kubeconfig or "")
    return Done("agent removed")


def delete_cluster(attempt: Attempt) -> Outcome:
    attempt.backend.delete_cluster(attempt.cluster_request)
    return Done("deletion requested")


def release_account(attempt: Attempt) -> Outcome:
    binding = attempt.subject.data.get("account")
    if not binding:
        return Done("no account was claimed")
    assert attempt.plan.account_pool is not None
    attempt.catalog.account_pools[attempt.plan.account_pool].release(binding, attempt.subject.name)

    def forget(session: Session) -> None:  # a resumed environment claims again: this one may be dirty
        row = _environment(session, attempt)
        row.data = {**{k: v for k, v in row.data.items() if k != "account"}, "releasedAccount": binding}

    _write(attempt, forget)
    return Done(f"account {binding} released")


def delete_runtime(attempt: Attempt) -> Outcome:
    subject = attempt.subject

    def work(session: Session) -> str:
        _environment(session, attempt).runtime_id = None
        row = repo.runtime_by_id(session, subject.runtime_id or "")
        if row is None:
            return "no runtime left"
        session.delete(row)
        repo.record_change(session, repo.ENTITY_RUNTIME, row.id, attempt.now)
        repo.record_event(
            session,
            "RuntimeDeleted",
            f"runtime/{row.name}",
            f"environment {subject.name} deleted",
            attempt.now,
        )
        return f"runtime {row.name} deleted"

    message = _write(attempt, work)
    if subject.runtime_id:
        attempt.state.fleet.forget_keys(subject.runtime_id)
    return Done(message)


def archive(attempt: Attempt) -> Outcome:
    def work(session: Session) -> None:
        row = _environment(session, attempt)
        row.archived_at = row.archived_at or attempt.now
        row.sealed = None  # nothing secret is kept for history

    _write(attempt, work)
    return Done("environment archived")


def sealed_name(environment_id: str) -> str:
    return f"environment/{environment_id}"


def unseal(state: ServerState, row: EnvironmentRow) -> dict[str, str]:
    return {} if row.sealed is None else state.box.open(sealed_name(row.id), row.sealed)


def subject_of(state: ServerState, row: EnvironmentRow) -> Subject:
    secret = unseal(state, row)
    parameters = {**row.parameters, **{k: v for k, v in secret.items() if k != CLUSTER_KUBECONFIG}}
    return Subject(
        id=row.id,
        name=row.name,
        plan=row.plan,
        region=row.region,
        labels=dict(row.labels),
        parameters=parameters,
        global_account=row.global_account,
        subaccount=row.subaccount,
        runtime_id=row.runtime_id,
        data=dict(row.data),
        cluster_kubeconfig=secret.get(CLUSTER_KUBECONFIG),
        secret=secret,
    )


def left_by(stages: list[Stage]) -> list[str]:
    """What the finished stages of a failed provisioning left in place."""
    return [LEAVES[s.name] for s in stages if s.name in LEAVES and s.state == "succeeded"]


STAGES: dict[str, Callable[[Attempt], Outcome]] = {
    "validate": validate,
    "claim_account": claim_account,
    "register_runtime": register_runtime,
    "create_cluster": create_cluster,
    "wait_for_cluster": wait_for_cluster,
    "fetch_kubeconfig": fetch_kubeconfig,
    "install_agent": install_agent,
    "wait_for_connection": wait_for_connection,
    "update_runtime": update_runtime,
    "update_cluster": update_cluster,
    "remove_agent": remove_agent,
    "delete_cluster": delete_cluster,
    "wait_for_deletion": wait_for_deletion,
    "release_account": release_account,
    "delete_runtime": delete_runtime,
    "archive": archive,
}
