"""Compass: applications, scenarios, label definitions and automatic scenario assignment (hub side)."""
