"""Composing a spec: files, ``extends:``, overrides and ``${…}`` → the document to validate.

Owns everything between the text of the files and the plain document that
:func:`~raysweep.spec.load.parse_spec` validates, in this order:

1. each file is read strictly (:mod:`~raysweep.spec.yaml_loader`), with the place of each key;
2. its ``extends:`` (a file name relative to it, or a list of them, merged in order) is composed
   first, recursively; a file that extends itself, through any chain, is refused;
3. the file's own keys are deep-merged over its parents': mappings key by key, anything else
   (lists included) replaced whole;
4. overrides ``key.path=value`` apply in order (OmegaConf's dotlist syntax: list items by
   index, ``sources.1.training.eps=8/255``; values read as YAML, ``subset_sizes=[100,400]``);
5. ``${…}`` interpolations resolve, OmegaConf's: ``${pretrain.epochs}``, ``${oc.env:VAR}``,
   ``${oc.env:VAR,default}`` (an environment value is text: ``${oc.decode:${oc.env:N,3}}``
   reads it as YAML); a literal ``${`` is written ``\\${``;
6. a key whose value is ``null`` is removed: how a file drops a key its parent sets
   (``finetune: null``), or an override does (``finetune=null``).

:func:`resolved_yaml` writes the result as YAML, the copy a sweep keeps of what it ran.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from raysweep.spec.files import read_spec_text
from raysweep.spec.keys import EXTENDS, TOP
from raysweep.spec.origins import KeyPath, Origin, Origins, parse_where, walk, where_of
from raysweep.spec.reader import Reader, SpecError, clip, did_you_mean, shown
from raysweep.spec.yaml_loader import read_yaml_marked

#: Files one spec may read through ``extends`` (a chain, or a diamond read twice, counts each).
MAX_FILES = 32
#: YAML dates and binary values reach the validator as they are (it names their type).
FLAGS = {"allow_objects": True}
#: OmegaConf reads these as an interpolation and a value left to fill in.
INTERPOLATION, MISSING = "${", "???"
EXAMPLE = "e.g. finetune.optimizer.lr=0.01 or sources.1.training.eps=8/255"


def merged(base: Any, override: Any) -> Any:
    """``override`` deep-merged over ``base``: mappings key by key, anything else replaced."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    return {**base, **{k: merged(base.get(k), v) for k, v in override.items()}}


@dataclass(frozen=True)
class Composed:
    """A spec ready to validate: ``data``, where each key came from, and what made it."""

    data: Any
    origins: Origins
    source: str
    #: Every file ``source`` extends, directly or not, in the order they merge.
    parents: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()


@dataclass
class Chain:
    """The files of one composition, read depth-first: parents before the file they extend."""

    layers: list[tuple[str, Any, dict[KeyPath, Origin]]] = field(default_factory=list)
    reads: int = 0

    def read(self, path: Path, chain: tuple[Path, ...] = (), via: Origin | None = None) -> None:
        self.reads += 1
        if self.reads > MAX_FILES:
            raise SpecError(f"{via}: {EXTENDS}: more than {MAX_FILES} files to read; flatten it")
        try:
            data, places = read_yaml_marked(read_spec_text(path), str(path))
        except SpecError as error:
            raise SpecError(f"{via}: {EXTENDS}: {error}") if via else error from None
        if via is not None and not isinstance(data, dict):
            raise SpecError(f"{via}: {EXTENDS}: {path} is not a mapping of spec keys")
        for parent in self.parents(path, data, places):
            key, here = parent.resolve(), path.resolve()
            if key in (*chain, here):
                loop = " → ".join(p.name for p in (*chain, here, key))
                raise SpecError(
                    f"{places[(EXTENDS,)]}: {EXTENDS}: {parent} extends itself ({loop}); "
                    "remove one of the extends"
                )
            self.read(parent, (*chain, here), places[(EXTENDS,)])
        self.layers.append((str(path), data, places))

    @staticmethod
    def parents(path: Path, data: Any, places: dict[KeyPath, Origin]) -> list[Path]:
        """The files ``data`` extends (its ``extends`` key removed), relative to ``path``."""
        names = data.pop(EXTENDS, None) if isinstance(data, dict) else None
        if names is None:
            return []
        listed = [names] if isinstance(names, str) else names
        if not (isinstance(listed, list) and listed) or not all(
            isinstance(n, str) and n.strip() for n in listed
        ):
            raise SpecError(
                f"{places[(EXTENDS,)]}: {EXTENDS}: must be a spec file name (relative to this "
                f"file) or a list of them, got {shown(names)}"
            )
        return [path.parent / Path(n.strip()).expanduser() for n in listed]


def compose(path: str | Path, overrides: Sequence[str] = ()) -> Composed:
    """The document ``path`` describes, with its parents and ``overrides`` (see the module)."""
    path = Path(path)
    chain = Chain()
    chain.read(path)
    data: Any = {}
    origins = Origins()
    for _, layer, places in chain.layers:
        data = merged(data, layer)
        origins.update(places)
    if isinstance(data, dict):
        for text in overrides:
            data = overridden(data, text, origins, str(path))
        if needs_resolving(data):
            data = resolved(data, origins, str(path))
        data = without_nulls(data)
    origins.keep_only(data)
    files = tuple(name for name, _, _ in chain.layers[:-1])
    return Composed(data, origins, str(path), files, tuple(overrides))


def override_error(source: str, text: str, problem: str) -> SpecError:
    return SpecError(f"{source}: override {clip(text, 120)!r}: {problem}")


def override_path(data: dict, key: str, text: str, source: str) -> KeyPath:
    """The key path ``key`` names in ``data`` (list items by index), checked: a known
    top-level key, indices of existing items."""
    parts = parse_where(key)
    if "=" not in text or not parts or "[]" in key or "" in key.split("."):
        raise override_error(source, text, f"not KEY=VALUE; write key.path=value, {EXAMPLE}")
    top = str(parts[0])
    if top not in TOP.allowed:
        fix = "it is read before overrides: edit the file" if top == EXTENDS else None
        raise override_error(
            source,
            text,
            f"unknown key '{clip(top, 60)}'; "
            + (fix or f"{did_you_mean(top, TOP.allowed)}allowed keys: {', '.join(TOP.allowed)}"),
        )
    path: list[str | int] = []
    node: Any = data
    for part in parts:
        if isinstance(node, list):
            index = int(part) if str(part).isdigit() else -1
            if not 0 <= index < len(node):
                raise override_error(
                    source,
                    text,
                    f"{where_of(tuple(path))} is a list of {len(node)} items: give an index from "
                    f"0 to {len(node) - 1}, got {shown(part)}",
                )
            path.append(index)
            node = node[index]
        else:
            path.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return tuple(path)


def overridden(data: dict, text: str, origins: Origins, source: str) -> dict:
    """``data`` with the override ``text`` (``key.path=value``) applied, OmegaConf's way:
    the value read as YAML, merged into a mapping it meets, replacing anything else."""
    key, _, raw = text.partition("=")
    path = override_path(data, key, text, source)
    try:
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={raw}"]))["value"]
        config = OmegaConf.create(data, flags=FLAGS)
        OmegaConf.update(config, ".".join(map(str, path)), value, merge=True)
        result = OmegaConf.to_container(config)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise override_error(
            source, text, f"the value is not valid YAML ({problem}); quote it: key='...'"
        ) from None
    except OmegaConfBaseException as error:
        raise override_error(source, text, first_line(error)) from None
    origin = Origin(source, override=text)
    created = [path[:end] for end in range(1, len(path)) if path[:end] not in origins.places]
    origins.update({p: origin for p in (*created, *((*path, *inner) for inner in walk(value)))})
    assert isinstance(result, dict)
    return result


def first_line(error: BaseException) -> str:
    return clip(str(error).strip().splitlines()[0] if str(error).strip() else repr(error), 200)


def needs_resolving(data: Any) -> bool:
    """Whether any string holds an interpolation or OmegaConf's ``???``."""
    return any(isinstance(v, str) and (INTERPOLATION in v or v == MISSING) for v in values(data))


def values(data: Any) -> list[Any]:
    """Every value inside ``data``, containers included."""
    found, stack = [], [data]
    while stack:
        node = stack.pop()
        found.append(node)
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def resolved(data: dict, origins: Origins, source: str) -> Any:
    """``data`` with every ``${…}`` resolved; a SpecError listing each one that cannot be."""
    reader = Reader(source, origins)
    try:
        config = OmegaConf.create(data, flags=FLAGS)
    except OmegaConfBaseException as error:  # checked when created: ${ without its }
        where = getattr(error, "full_key", None) or "top level"
        raise reader.fail(where, interpolation_problem(error)) from None
    result = plain(config, reader)
    error = reader.error()
    if error is not None:
        raise error
    return result


def plain(node: DictConfig | ListConfig, reader: Reader, path: KeyPath = ()) -> Any:
    """``node`` as plain dicts and lists, resolved; problems recorded on ``reader``."""
    keys = list(node.keys()) if isinstance(node, DictConfig) else list(range(len(node)))
    out: dict[Any, Any] = {}
    for key in keys:
        at = (*path, key if isinstance(key, int) and isinstance(node, ListConfig) else str(key))
        try:
            value = node[key]
        except OmegaConfBaseException as error:
            reader.note(where_of(at), interpolation_problem(error))
            continue
        out[key] = plain(value, reader, at) if isinstance(value, DictConfig | ListConfig) else value
    return out if isinstance(node, DictConfig) else list(out.values())


def interpolation_problem(error: OmegaConfBaseException) -> str:
    """What an OmegaConf error means for a spec, and the fix."""
    text = first_line(error)
    name = type(error).__name__
    if name == "MissingMandatoryValue":
        return "is ??? (a value left to fill in); give it in the file or as an override"
    if "Environment variable" in text:
        return f"{text}; set it, or give a default: ${{oc.env:VAR,default}}"
    if name == "GrammarParseError":
        return (
            f"not a valid interpolation ({text}); write ${{key.path}} or ${{oc.env:VAR}}, or "
            "\\${ for a literal ${"
        )
    return f"cannot resolve the interpolation: {text}; refer to a key of the spec or oc.env"


def without_nulls(data: Any) -> Any:
    """``data`` without the mapping keys whose value is null (list items stay)."""
    if isinstance(data, dict):
        return {k: without_nulls(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [without_nulls(v) for v in data]
    return data


class PlainDumper(yaml.SafeDumper):
    """Writes every value out (no anchors or aliases)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def escaped(data: Any) -> Any:
    """``data`` with ``${`` in strings written ``\\${``, so reading it back resolves nothing."""
    if isinstance(data, dict):
        return {k: escaped(v) for k, v in data.items()}
    if isinstance(data, list):
        return [escaped(v) for v in data]
    if isinstance(data, str):
        return data.replace(INTERPOLATION, "\\" + INTERPOLATION)
    return data


def resolved_yaml(path: str | Path, overrides: Sequence[str] = ()) -> str:
    """The spec ``path`` with its ``extends`` merged, ``overrides`` applied and ``${…}``
    resolved, as YAML with a header naming all three: what a sweep keeps as its spec copy;
    :func:`~raysweep.spec.load.load_spec` of it plans exactly the same jobs."""
    composed = compose(path, overrides)
    header = [
        "# The resolved spec: parents merged, overrides and ${...} applied (written by raysweep).",
        f"# spec: {json.dumps(composed.source)}",
        f"# extends: {json.dumps(list(composed.parents))}",
        f"# overrides: {json.dumps(list(composed.overrides))}",
    ]
    body = yaml.dump(
        escaped(composed.data),
        Dumper=PlainDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=None,
        width=100,
    )
    return "\n".join(header) + "\n" + body
