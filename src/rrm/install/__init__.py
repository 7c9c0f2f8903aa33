"""The objects that install rrm into a Kubernetes cluster, defined once.

`agent_objects` (the agent of one runtime) and `control_plane_objects` (the control plane) are the only
definitions: `rrm runtime manifest` prints the first, provisioning applies it with
`rrm.install.apply.apply_objects` (not imported here: it loads the `kubernetes` client), and
`python -m rrm.install.generate` writes `deploy/` (the kustomize bases and the Helm charts) from both.
"""

from rrm.install.agent import AgentInstallValues, agent_objects
from rrm.install.control_plane import ControlPlaneInstallValues, IngressValues, control_plane_objects
from rrm.install.documents import dump_documents

__all__ = [
    "AgentInstallValues",
    "ControlPlaneInstallValues",
    "IngressValues",
    "agent_objects",
    "control_plane_objects",
    "dump_documents",
]
