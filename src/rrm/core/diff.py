"""What changed between two keyed collections: the differ stage of fetch → diff → apply → report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Changeset(Generic[K, V]):
    create: dict[K, V] = field(default_factory=dict)
    update: dict[K, V] = field(default_factory=dict)
    delete: dict[K, V] = field(default_factory=dict)
    unchanged: dict[K, V] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.delete)


def diff(desired: Mapping[K, V], actual: Mapping[K, V]) -> Changeset[K, V]:
    """Keys only in `desired` are created, only in `actual` deleted, in both but unequal updated."""
    result: Changeset[K, V] = Changeset()
    for key, want in desired.items():
        if key not in actual:
            result.create[key] = want
        elif actual[key] != want:
            result.update[key] = want
        else:
            result.unchanged[key] = want
    for key, have in actual.items():
        if key not in desired:
            result.delete[key] = have
    return result
