"""Pydantic models of the agent API (`/agent/v1/...`): the protocol's definition, used by the control plane.

Agents use their pydantic-free mirror, `rrm.wire.plain`, which also defines the values a few fields may take.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from rrm.wire import __all__ as __all__  # the package keeps the one list of names
from rrm.wire.plain import (
    MAX_HEARTBEAT_INTERVAL,
    DriftChange,
    ResourceState,
    RuntimeKind,
    truncated,
    truncated_start,
)
from rrm.wire.plain import RUNTIME_KINDS as RUNTIME_KINDS  # one of them

# messages and errors cut to `rrm.wire.plain.MAX_TEXT_LENGTH` characters; command output keeps its end
FreeText = Annotated[str, AfterValidator(truncated)]
CommandOutput = Annotated[str, AfterValidator(truncated_start)]


class PairRequest(BaseModel):
    """First contact: a single-use pairing token plus the public half of the agent's own key pair."""

    token: str = Field(min_length=1)
    public_key: str = Field(description="PEM-encoded Ed25519 public key made by the agent")
    agent_version: str = ""


class PairResponse(BaseModel):
    runtime_id: str
    runtime_name: str
    kind: RuntimeKind
    key_id: str


class RotateChallenge(BaseModel):
    """A nonce for one key rotation, issued to the runtime that asked, valid for `expires_in` seconds."""

    nonce: str
    expires_in: int


class RotateRequest(BaseModel):
    """The new key replaces the current one at once, if `proof` is the current key's signature over the
    challenge's nonce and the new key (`rrm.wire.agent_auth.rotation_message`)."""

    public_key: str = Field(description="PEM-encoded Ed25519 public key made by the agent")
    nonce: str = Field(description="from POST /agent/v1/rotate/challenge")
    proof: str = Field(description="base64url Ed25519 signature by the current key")


class RotateResponse(BaseModel):
    key_id: str


class DeliveredSecret(BaseModel):
    """A secret's values, delivered only to runtimes whose placed components reference it."""

    name: str
    revision: int
    data: dict[str, str]


class DesiredState(BaseModel):
    """Everything a runtime should run. Runtimes with the same placement receive byte-identical bodies.

    `hash` is `rrm.core.hashing.state_hash(components, secrets)`; the agent recomputes it to verify.
    `components` are complete Dapr manifests (apiVersion, kind, metadata, spec, auth?, scopes?).
    """

    hash: str
    components: list[dict[str, Any]]
    secrets: list[DeliveredSecret] = []


class ResourceResult(BaseModel):
    """One delivered resource: applied or failed, whether the sidecar lists it as loaded (None when the
    agent cannot see the sidecar), and since when it has been so (the directors' time, as the agent knows
    it)."""

    kind: str = "Component"
    name: str
    state: ResourceState
    message: FreeText = ""
    revision: int | None = None
    loaded: bool | None = None
    since: datetime | None = None


class LoadedComponent(BaseModel):
    name: str
    type: str
    version: str = ""


class SidecarReport(BaseModel):
    """What daprd's `/v1.0/metadata` says it really loaded."""

    reachable: bool
    app_id: str | None = None
    runtime_version: str | None = None
    components: list[LoadedComponent] = []
    error: FreeText = ""


class ReloadResult(BaseModel):
    """What the agent did to make sidecars load a change: a reload command, or workload restarts."""

    command: str
    exit_code: int
    output: CommandOutput = Field(default="", description="the end of the command's output")
    restarted: list[str] = Field(default=[], description="workloads restarted, as Kind/namespace/name")


class DriftRecord(BaseModel):
    """An object the agent manages that was changed outside rrm and put back."""

    resource: str
    change: DriftChange
    detected_at: datetime
    fields: list[str] = Field(default=[], description="paths that changed (never values), for `modified`")


class StatusReport(BaseModel):
    """`PUT /agent/v1/status`: applied state, per-resource results, the sidecar's view; also the heartbeat."""

    applied_hash: str | None = None
    resources: list[ResourceResult] = []
    sidecar: SidecarReport | None = None
    reload: ReloadResult | None = None
    drift: list[DriftRecord] = []
    agent_version: str = ""
    target: str = ""
    heartbeat_interval: float = Field(default=15.0, gt=0, le=MAX_HEARTBEAT_INTERVAL)
    message: FreeText = ""
