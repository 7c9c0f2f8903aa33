"""The agent protocol: what the control plane and the agents share on the wire.

The server and the agent never import each other; they meet here (and in `rrm.core`, `rrm.dapr`):
`rrm.wire.protocol` defines the bodies of the agent API once, `rrm.wire.agent_auth` the agents' signed tokens.
"""
