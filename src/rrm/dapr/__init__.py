"""Dapr knowledge: Dapr's own schemas (shipped in `schemas/`) and validation of resources against them."""

from rrm.dapr.catalog import component_crd_schema, known_component_types
from rrm.dapr.validation import (
    FieldError,
    ValidationResult,
    is_sensitive_field,
    validate_component,
    validate_secret,
)

__all__ = [
    "FieldError",
    "ValidationResult",
    "component_crd_schema",
    "is_sensitive_field",
    "known_component_types",
    "validate_component",
    "validate_secret",
]
