"""Where each key of a composed spec was written: file, line and column, or an override.

The YAML loader records the place of every key and list item of a file by its path
(``("sources", 1, "training", "eps")``); composition (:mod:`~raysweep.spec.compose`) overlays
the files of an ``extends`` chain and the overrides in the order they apply, so a key names the
file (or the override) whose value was kept. Readers name keys by text
(``sources[1].training.eps``); :meth:`Origins.locate` finds the nearest recorded place.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: A key path: mapping keys (as text) and list indices.
KeyPath = tuple[str | int, ...]
_PART = re.compile(r"\[(\d*)\]|([^.\[\]]+)")


@dataclass(frozen=True)
class Origin:
    """Where a value was written: ``file`` line and column (1-based; 0 when unknown), or the
    override (``key.path=value``) it came from."""

    file: str
    line: int = 0
    column: int = 0
    override: str = ""

    def __str__(self) -> str:
        if self.override:
            return f"override {self.override!r}"
        return f"{self.file}:{self.line}:{self.column}" if self.line else self.file


def parse_where(where: str) -> KeyPath:
    """``sources[1].training.eps`` → ``("sources", 1, "training", "eps")``; a ``[]`` ("every
    item", as in ``sources[].name``) ends the path; ``top level`` is the root."""
    if where == "top level":
        return ()
    path: list[str | int] = []
    for match in _PART.finditer(where):
        index, key = match.groups()
        if key is not None:
            path.append(key)
        elif index:
            path.append(int(index))
        else:
            break
    return tuple(path)


def where_of(path: KeyPath) -> str:
    """The readers' text of a key path: ``("sources", 1, "eps")`` → ``sources[1].eps``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "top level"


def walk(value: Any, path: KeyPath = ()) -> Iterator[KeyPath]:
    """Every key path inside ``value`` (mapping keys as text), ``path`` itself first."""
    stack = [(path, value)]
    while stack:
        at, node = stack.pop()
        yield at
        if isinstance(node, Mapping):
            stack.extend(((*at, str(k)), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend(((*at, i), v) for i, v in enumerate(node))


class Origins:
    """Key path → :class:`Origin`, for the keys of one composed document."""

    def __init__(self, places: Mapping[KeyPath, Origin] | None = None) -> None:
        self.places: dict[KeyPath, Origin] = dict(places or {})

    def update(self, places: Mapping[KeyPath, Origin]) -> None:
        """A later layer (a file's own keys over its parents', an override): its places win."""
        self.places.update(places)

    def keep_only(self, document: Any) -> None:
        """Forget the places of keys that the merges replaced or removed."""
        present = set(walk(document))
        self.places = {path: o for path, o in self.places.items() if path in present}

    def locate(self, where: str | KeyPath) -> Origin | None:
        """The place of ``where``, or of its nearest recorded parent."""
        path = parse_where(where) if isinstance(where, str) else where
        for end in range(len(path), -1, -1):
            origin = self.places.get(path[:end])
            if origin is not None:
                return origin
        return None
