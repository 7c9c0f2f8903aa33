"""The interface the engine uses for the Hyperscaler Account Pool; `hap.py` implements it on Gardener's
SecretBindings and CredentialsBindings. Both calls are idempotent for the same environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class AccountClaim:
    """Who asks for an account: the plan and region decide the pool (the HAP rules), the tenant keeps it."""

    plan: str
    platform_region: str | None
    region: str | None
    global_account: str
    environment: str


class AccountPool(Protocol):
    def claim(self, claim: AccountClaim) -> str:
        """The binding's name for this tenant: its own one again, else a free one labelled for it (never a
        dirty one); shared pools (trial) give the least-used. `RetryLater` when none is free yet."""
        ...

    def release(self, binding: str, environment: str) -> None:
        """The environment's cluster is gone: mark the binding dirty unless another cluster still uses it
        or it is shared; the cleanup job returns it to the pool."""
        ...
