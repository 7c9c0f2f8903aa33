"""Which components reach which runtime: the `rrm.io/selector` annotation against the runtime's labels."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache

from rrm.core.resources import StoredComponent
from rrm.core.selectors import Selector, parse_stored_selector


@lru_cache(maxsize=4096)
def _compiled(text: str) -> Selector:
    return parse_stored_selector(text)


def component_matches(component: StoredComponent, labels: Mapping[str, str]) -> bool:
    """A component without a selector reaches no runtime; an empty selector reaches every runtime."""
    text = component.selector
    return text is not None and _compiled(text).matches(labels)


def place(components: Iterable[StoredComponent], labels: Mapping[str, str]) -> list[StoredComponent]:
    return [c for c in components if component_matches(c, labels)]
