"""The seam between the sync loop and a runtime kind: render → observe → apply, plus what the sidecars loaded.

A target turns a desired state into native objects keyed by an id of its choosing (files, Kubernetes objects,
service instances); the loop diffs them with `rrm.core.diff` and hands the changeset back to `apply`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from rrm.agent.config import AgentConfig
from rrm.core.diff import Changeset
from rrm.wire import DesiredState, ReloadResult, ResourceResult, SidecarReport

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

    def prepare(self) -> None:  # noqa: B027 - optional hook, most targets need nothing
        """Called once before the first sync, e.g. to create directories or clean up after a crash."""

    @abstractmethod
    def render(self, state: DesiredState) -> dict[str, NativeObject]:
        """Pure: the native objects that represent `state`."""

    @abstractmethod
    def observe(self) -> dict[str, NativeObject]:
        """The native objects that exist now, limited to those this agent owns."""

    @abstractmethod
    def apply(self, changes: NativeChanges, state: DesiredState, *, prune: bool) -> ApplyOutcome:
        """Make `changes` real in a safe order; with `prune=False` nothing is deleted."""

    def sidecar_report(self) -> SidecarReport | None:
        """What the Dapr sidecars report as loaded; None when the target cannot tell."""
        return None
