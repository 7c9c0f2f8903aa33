"""The in-memory view of the fleet that every agent request is served from, in four parts:

- `feed.FleetFeed` follows the change feed: after each committed change it reads only what changed, in a
  worker thread, into its caches of runtimes, components, secrets, active rollouts and Compass;
- `render.Renderer` computes desired states with the pure core functions, memoized per `PlacementKey`
  (labels, the revisions rollouts hand out, explicit scenarios) and per `RenderKey` (the revisions placed
  and connected), so that runtimes with the same placement share one encoded body;
- `longpoll.LongPollHub` keeps each runtime's delivery, wakes the long-polls whose state changed and holds a
  burst of changes to one state per delivery window;
- `keys.AgentKeys` keeps the agents' public keys.

`Fleet` puts them together. When each cache is emptied or changed:

- **feed caches** (runtime id → entry, component → current revision, secret → value, component → active
  rollout, Compass registry): refilled whole by `load`; `catch_up` reads again each entity the change feed
  names after `seq` and replaces its entry, or drops it when it is gone.
- **agent keys** (key id → runtime and public key): refilled whole by `load`; a runtime's are replaced when
  the feed reads the runtime again (paired, rotated, revoked, deleted); the process committing a pairing,
  rotation or revocation changes them at once with `set_key` / `forget_keys`, ahead of the feed.
- **placement groups** (`PlacementKey` → runtime ids): dropped by `load` and whenever a runtime, a rollout
  or the registry changed; rebuilt at the next change that concerns every runtime.
- **renders** (`RenderKey` → `Delivery`): dropped by `load` and whenever a secret changed; after a component
  change the earlier ones are kept one more change for the keys it left alone, so a write re-renders only
  the placements it touches; a rollout or Compass change keeps them (their keys tell the revisions and
  applications apart).
- **deliveries** (runtime id → `Delivery`): recomputed for every runtime by `load` and after a change to
  components, secrets, rollouts or Compass, else for the runtimes read again; an entry is replaced when the
  render is another object (its long-poll woken when the hash differs) and dropped when the runtime is gone.
- **delivery window** (runtime id → when the window began, the ETag sent): set when a state is sent; the
  window starts again when the agent asks with the ETag it was sent; dropped when the runtime is gone.
- **signals** (runtime id → the event its long-polls wait on): removed when set, that is when the runtime's
  delivery changed, the runtime is gone or the hub closes.
"""

from rrm.server.fleet.feed import RuntimeEntry
from rrm.server.fleet.fleet import Fleet
from rrm.server.fleet.render import Delivery

__all__ = ["Delivery", "Fleet", "RuntimeEntry"]
