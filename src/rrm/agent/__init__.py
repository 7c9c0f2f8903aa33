"""The agent: pairs with a director, pulls its runtime's desired state, applies it natively, reports back."""

from rrm.agent.config import AgentConfig
from rrm.agent.runner import run_agent

__all__ = ["AgentConfig", "run_agent"]
