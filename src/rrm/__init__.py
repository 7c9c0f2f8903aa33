"""rrm, the Remote Runtime Manager: one configuration of Dapr resources for a whole fleet of runtimes."""

__version__ = "0.1.0"
