"""The seam between the sync loop and a runtime kind: render → observe → apply, plus what the sidecars loaded.

A target turns a desired state into native objects keyed by an id of its choosing (files, Kubernetes objects,
service instances); the loop diffs them with `rrm.core.diff` and hands the changeset back to `apply`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from rrm.agent.config import AgentConfig
from rrm.agent.loading import SidecarAnswer
from rrm.core.diff import Changeset
from rrm.core.resources import REVISION_ANNOTATION
from rrm.wire.protocol import DesiredState, ReloadResult, ResourceResult

NativeObject: TypeAlias = dict[str, Any]
NativeChanges: TypeAlias = Changeset[str, NativeObject]


@dataclass(frozen=True)
class ApplyOutcome:
    """A result per delivered resource, whether anything changed on the runtime, the reload it triggered."""

    resources: list[ResourceResult]
    changed: bool
    reload: ReloadResult | None = None


class Target(ABC):
    """Blocking I/O is fine here: the loop calls every method in a worker thread."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_config(cls, config: AgentConfig) -> Target:
        """Raise `ConfigurationError` when the configuration lacks what this target needs."""

    def attach(self, runtime_id: str) -> None:  # noqa: B027 - optional hook
        """Called once the runtime is known (after pairing or loading the identity), before `prepare`."""

    def prepare(self) -> None:  # noqa: B027 - optional hook, most targets need nothing
        """Called once before the first sync, e.g. to create directories or clean up after a crash."""

    def watch(self, wake: Callable[[], None]) -> None:  # noqa: B027 - optional hook
        """Start noticing changes made outside the agent (in daemon threads) and call `wake` for each.

        `wake` is thread-safe and asks the loop for a reconcile with a drift check; a target may also call
        it to be reconciled again later, e.g. for work it postponed.
        """

    @abstractmethod
    def render(self, state: DesiredState) -> dict[str, NativeObject]:
        """Pure: the native objects that represent `state`."""

    @abstractmethod
    def observe(self) -> dict[str, NativeObject]:
        """The native objects that exist now, limited to those this agent owns."""

    @abstractmethod
    def apply(self, changes: NativeChanges, state: DesiredState, *, prune: bool) -> ApplyOutcome:
        """Make `changes` real in a safe order; with `prune=False` nothing is deleted."""

    async def sidecar_report(self) -> SidecarAnswer:
        """What the Dapr sidecar reports as loaded, or the target's judgement over all its sidecars (a
        `SidecarsView`); None when the target cannot tell. Asked on the event loop, several times an update:
        a target that must block to tell hands that to a thread itself."""
        return None

    async def close(self) -> None:  # noqa: B027 - a hook: only some targets hold anything open
        """Let go of what the target holds open (connections), when the agent stops."""

    def component_name(self, object_id: str) -> str | None:
        """The Dapr component a native object id holds; None for anything else (secrets, stores)."""
        return None


def component_results(state: DesiredState, failed: Mapping[str, str]) -> list[ResourceResult]:
    """One result per delivered component: failed with its message, else applied."""
    results = []
    for manifest in state.components:
        metadata = manifest.get("metadata") or {}
        name = str(metadata.get("name", ""))
        revision = (metadata.get("annotations") or {}).get(REVISION_ANNOTATION)
        results.append(
            ResourceResult(
                name=name,
                state="failed" if name in failed else "applied",
                message=failed.get(name, ""),
                revision=int(revision) if isinstance(revision, str) and revision.isdigit() else None,
            )
        )
    return results
