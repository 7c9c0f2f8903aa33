"""Objects as YAML documents, the way people read them: keys in the order they were written, no anchors."""

from __future__ import annotations

from typing import Any

import yaml


class _PlainDumper(yaml.SafeDumper):
    """Writes shared values out every time: no `&id001` anchors for people to puzzle over."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_documents(objects: list[dict[str, Any]]) -> str:
    return "---\n".join(yaml.dump(o, Dumper=_PlainDumper, sort_keys=False) for o in objects)
