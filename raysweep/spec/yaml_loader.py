"""Strict YAML for sweep specs: text → plain Python values, or a one-line SpecError.

``yaml.safe_load`` accepts documents that cost nothing to write and everything to read: nested
anchors ("billion laughs") that expand to billions of values once anything walks them, 20,000
levels of brackets that overflow the composer's recursion, a key given twice of which the last
silently wins. :class:`StrictLoader` composes a document while keeping, for every finished
node, its size and height as they would be after alias expansion (memoised per node, so an
alias costs one look-up), and stops as soon as a limit is passed, long before anything is
expanded:

- at most :data:`MAX_NODES` values (scalars, lists and mappings, keys included) and
  :data:`MAX_TEXT` characters of scalars after expansion (one long string repeated by 99,999
  aliases is few values, but gigabytes to any ``repr`` or ``json.dumps`` of it);
- at most :data:`MAX_DEPTH` levels of nesting, after expansion;
- no key twice in one mapping (``<<`` merges may still override merged keys);
- no alias inside the node it names (a recursive structure);
- integers of at most :data:`MAX_INTEGER_CHARS` characters (Python refuses to read decimal
  integers above 4,300 digits; a spec needs none above a few).

Small anchors and aliases, and merges, keep working. The shipped specs have at most 325 values
and 6 levels. :func:`read_yaml_marked` also gives the line and column of every key and list
item (:mod:`~raysweep.spec.origins`), for problems that name them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from raysweep.spec.origins import KeyPath, Origin
from raysweep.spec.reader import SpecError, clip, shown

#: Values in a document after alias expansion; the largest shipped spec has 325.
MAX_NODES = 100_000
#: Characters of all scalars after alias expansion; the shipped specs have under 2,000.
MAX_TEXT = 4_000_000
#: Levels of nesting after alias expansion; the deepest shipped spec has 6.
MAX_DEPTH = 100
#: Characters of one integer as written (``0x…`` included).
MAX_INTEGER_CHARS = 100
MERGE_TAG = "tag:yaml.org,2002:merge"


class Extent(NamedTuple):
    """What a node would be once its aliases are expanded."""

    values: int
    height: int
    text: int


def children(node: Node) -> list[Node]:
    """The nodes directly inside ``node`` (a mapping's keys and values)."""
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that bounds size and depth after alias expansion and refuses duplicate keys.

    Errors are :class:`SpecError` naming ``source`` and the line."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.depth = 0  # nodes open around the one being composed
        # Values and scalar characters composed so far, each alias counted at its expanded size
        self.values = 0
        self.text = 0
        self.expanded: dict[Node, Extent] = {}  # of every finished node

    def fail(self, mark: yaml.Mark, message: str) -> SpecError:
        return SpecError(f"{self.source}: line {mark.line + 1}: {message}")

    def count(self, values: int, text: int, mark: yaml.Mark) -> None:
        self.values += values
        self.text += text
        if self.values > MAX_NODES:
            raise self.fail(
                mark,
                f"the document holds more than {MAX_NODES:,} values once its aliases are "
                "expanded (nested anchors?); a spec needs a few hundred: write it out plainly",
            )
        if self.text > MAX_TEXT:
            raise self.fail(
                mark,
                f"the document holds more than {MAX_TEXT:,} characters once its aliases are "
                "expanded (a long string repeated by aliases?); write it out plainly",
            )

    def too_deep(self, mark: yaml.Mark, after: str = "") -> SpecError:
        return self.fail(
            mark,
            f"nested more than {MAX_DEPTH} levels deep{after}; a spec needs a handful: flatten it",
        )

    def fetch_flow_collection_start(self, TokenClass: type) -> None:
        # Refused already at the scanner: a flow collection is a node, so this refuses nothing
        # the composer would accept, and it spares the scanner its look-ahead for a possible
        # key over 1,000 open brackets (~0.4 s).
        if self.flow_level >= MAX_DEPTH:
            raise self.too_deep(self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(yaml.AliasEvent):
            return self.compose_alias(parent, index)
        mark = self.peek_event().start_mark
        self.depth += 1
        if self.depth > MAX_DEPTH:  # checked before descending: the composer recurses
            raise self.too_deep(mark)
        values, text = self.values, self.text
        node = super().compose_node(parent, index)
        self.depth -= 1
        self.count(1, len(node.value) if isinstance(node, ScalarNode) else 0, mark)
        height = 1 + max((self.expanded[c].height for c in children(node)), default=0)
        self.expanded[node] = Extent(self.values - values, height, self.text - text)
        return node

    def compose_alias(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        node = super().compose_node(parent, index)  # the anchored node, or undefined-alias error
        if node not in self.expanded:  # still being composed: the alias is inside its anchor
            raise self.fail(
                event.start_mark,
                f"alias *{clip(str(event.anchor), 40)} is inside the node it names (a recursive "
                "structure); a spec is a tree: write the value out",
            )
        extent = self.expanded[node]
        if self.depth + extent.height > MAX_DEPTH:
            expanded = f" once alias *{clip(str(event.anchor), 40)} is expanded"
            raise self.too_deep(event.start_mark, expanded)
        self.count(extent.values, extent.text, event.start_mark)
        return node

    def compose_mapping_node(self, anchor: str | None) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        self.check_unique_keys(node)
        return node

    def check_unique_keys(self, node: MappingNode) -> None:
        """Checked on the mapping as written, before ``<<`` merges are flattened into it."""
        first: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == MERGE_TAG:
                continue  # a list or mapping as a key: the constructor refuses it
            key = self.construct_object(key_node)  # 1 and 0x1 are the same key
            seen = first.setdefault(key, key_node.start_mark)
            if seen is not key_node.start_mark:
                raise self.fail(
                    key_node.start_mark,
                    f"key {shown(key)} appears twice (first at line {seen.line + 1}); keep one",
                )

    def construct_yaml_int(self, node: ScalarNode) -> int:
        if len(node.value) > MAX_INTEGER_CHARS:
            raise self.fail(
                node.start_mark,
                f"an integer written with {len(node.value):,} characters; a spec's numbers "
                f"have at most {MAX_INTEGER_CHARS}",
            )
        return super().construct_yaml_int(node)


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def malformed(error: yaml.YAMLError, text: str, source: str) -> SpecError:
    """A YAML syntax error as one line: where, and the parser's own words."""
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        place = f"line {mark.line + 1}, column {mark.column + 1}"
    elif isinstance(error, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text.count("\n", 0, error.position) + 1
        place = f"line {line}"
    else:
        place = "somewhere"
    problem = getattr(error, "problem", None) or getattr(error, "reason", None) or "invalid YAML"
    return SpecError(f"{source}: malformed YAML at {place}: {clip(problem, 200)}; fix the syntax")


def read_yaml(text: str, source: str) -> Any:
    """The one document in ``text``, read strictly; ``source`` names the file in errors."""
    return read_yaml_marked(text, source)[0]


def read_yaml_marked(text: str, source: str) -> tuple[Any, dict[KeyPath, Origin]]:
    """:func:`read_yaml`, and where each key and list item of the document was written."""
    try:
        loader = StrictLoader(text, source)  # refuses control characters already
    except yaml.YAMLError as error:
        raise malformed(error, text, source) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        data = loader.construct_document(node)  # flattens `<<` merges into their mappings
        return data, places(node, source)
    except yaml.YAMLError as error:
        raise malformed(error, text, source) from None
    finally:
        loader.dispose()


def places(root: Node, source: str) -> dict[KeyPath, Origin]:
    """Key path → where it was written: a mapping key's own line and column, a list item's.
    An aliased node is walked once, at its first path (deeper paths of the others fall back to
    the alias: the index stays as small as the file)."""

    def origin(node: Node) -> Origin:
        return Origin(source, node.start_mark.line + 1, node.start_mark.column + 1)

    found: dict[KeyPath, Origin] = {(): origin(root)}
    seen: set[int] = set()
    stack: list[tuple[KeyPath, Node]] = [((), root)]
    while stack:
        path, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key, value in node.value:
                at = (*path, str(key.value))
                found[at] = origin(key)
                stack.append((at, value))
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                found[(*path, i)] = origin(item)
                stack.append(((*path, i), item))
    return found
