"""Small readers that turn raw YAML values into typed values, and the problems they find.

Every reader takes a ``where`` path (``sources[1].training.eps``) so that a problem names the
exact key, what was found and what is allowed, and, through the spec's
:class:`~raysweep.spec.origins.Origins`, the file, line and column it was written at. A user
value quoted in a problem goes through :func:`shown`, so one problem line stays a few hundred
characters whatever the value (a 100,000 element list, a megabyte string): the message is for a
terminal, not a dump.

A reader raises a :class:`SpecError` for the value it cannot read; :meth:`Reader.attempt` and
:meth:`Reader.fields` record it and go on with the next independent value, and unknown keys are
recorded without stopping, so that one :class:`SpecError` lists every problem of a spec.
:class:`SpecError` is also what every other layer raises for a spec that cannot run.
"""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

from raysweep.models.names import FINETUNE_MODES
from raysweep.schema import ALL_IMAGES
from raysweep.spec.keys import Keys
from raysweep.spec.origins import Origin, Origins
from raysweep.sweepdir import name_problem

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: ``origin: where: message`` as one line. ``origin`` is
    ``file:line:col`` (or the file alone, or ``override 'k=v'``); ``where`` the key path."""

    where: str
    message: str
    origin: str = ""
    file: str = ""
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        return ": ".join(part for part in (self.origin, self.where, self.message) if part)


class SpecError(ValueError):
    """A sweep spec that cannot run. The message's first line says what is wrong (or how many
    things are: ``3 problems in spec.yaml:``); ``problems`` holds each, one line apiece."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems: list[Problem] = list(problems) or [Problem("", message)]

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (Ray, multiprocessing) with its problems
        return (type(self), (str(self), self.problems))

    @classmethod
    def listing(cls, problems: Sequence[Problem], source: str, more: int = 0) -> SpecError:
        """One problem as its line; several as a count, then one line each (``more``: how many
        further problems were found but not kept)."""
        if len(problems) == 1 and not more:
            return cls(str(problems[0]), problems)
        count = f"{len(problems) + more} problems in {source}"
        head = f"{count} (the first {len(problems)} listed):" if more else f"{count}:"
        return cls("\n".join([head, *map(str, problems)]), problems)


class Incomplete(SpecError):
    """A value not read because of problems already recorded on the reader."""

    def __init__(self, message: str = "problems recorded", problems: Sequence[Problem] = ()):
        super().__init__(message, problems)


class Section(dict[Any, Any]):
    """A mapping as :meth:`Reader.mapping` checked it: a missing required key (recorded
    already) raises :class:`Incomplete` when read, so only what needs it stops."""

    def __missing__(self, key: Any) -> Any:
        raise Incomplete(f"missing key {key!r} (recorded)")


def close_match(value: Any, allowed: Iterable[str]) -> str | None:
    """The allowed name closest to ``value`` (``optimiser`` → ``optimizer``), if one is close."""
    if not isinstance(value, str) or len(value) > 200:
        return None
    close = difflib.get_close_matches(value, list(allowed), n=1)
    return close[0] if close else None


def did_you_mean(value: Any, allowed: Iterable[str]) -> str:
    """``did you mean 'x'? `` for a close match of ``value`` among ``allowed``, else ``""``."""
    close = close_match(value, allowed)
    return f"did you mean '{close}'? " if close else ""


#: Longest key path and message text of one error; only pathological input comes near them
#: (the longest message of a valid vocabulary, unknown published model + the known list, is
#: under 400 characters).
MAX_WHERE_CHARS = 120
MAX_MESSAGE_CHARS = 400
#: Problems one SpecError lists; beyond them, only their count (a spec with 100,000 unknown
#: keys gets a short message, found in linear time).
MAX_PROBLEMS = 30
#: A number written as text (``8/255``) longer than this is not a number anyone meant; the
#: bound also keeps ``Fraction`` from building a 10**(10**8) integer out of ``1e100000000``.
MAX_NUMBER_CHARS = 64
LARGE_EXPONENT = re.compile(r"[eE][+-]?0*[1-9][0-9]{4,}")


class _ShortRepr(reprlib.Repr):
    """``repr`` that looks at no more of a value than it prints (reprlib never walks a whole
    structure); integers too long to print are described instead (Python refuses to format
    integers above 4,300 digits)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 2
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 4
        self.maxstring = self.maxother = 50
        self.maxlong = 40

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 4 * self.maxlong:  # > ~48 digits: don't format it at all
            return f"<an integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)

    def repr_bytes(self, x: bytes, level: int) -> str:  # a !!binary value
        text = repr(x[: self.maxstring])
        return text if len(x) <= self.maxstring else text[:-1] + "..." + text[-1]


_SHORT = _ShortRepr()


def shown(value: Any) -> str:
    """A value as an error quotes it: its ``repr``, shortened to at most ~50 characters per
    string and 4 items per level, 2 levels deep."""
    return _SHORT.repr(value)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with ``...`` when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def child(where: str, key: Any) -> str:
    """The path of ``key`` inside the mapping at ``where``."""
    key = clip(str(key), 60)
    return key if where == "top level" else f"{where}.{key}"


class Reader:
    """Reads one spec's values and keeps the problems found; every problem names the file and,
    through ``origins``, the line and column (or the parent file or override) of its key."""

    def __init__(self, source: str, origins: Origins | None = None) -> None:
        self.source = source
        self.origins = origins
        self.problems: list[Problem] = []
        self.more = 0  # problems found beyond MAX_PROBLEMS

    def problem(self, where: str, message: str, at: str | None = None) -> Problem:
        """A problem of the key ``where``, placed at the key ``at`` (default: ``where``)."""
        # The clips are a backstop: the readers already quote values through shown().
        where, message = clip(where, MAX_WHERE_CHARS), clip(message, MAX_MESSAGE_CHARS)
        origin = self.origins.locate(at or where) if self.origins else None
        origin = origin or Origin(self.source)
        return Problem(where, message, str(origin), origin.file, origin.line, origin.column)

    def fail(self, where: str, message: str, at: str | None = None) -> SpecError:
        """The error to raise for a value that cannot be read."""
        problem = self.problem(where, message, at)
        return SpecError(str(problem), [problem])

    def note(self, where: str, message: str, at: str | None = None) -> None:
        """Record a problem and read on."""
        self.record(SpecError("", [self.problem(where, message, at)]))

    def record(self, error: SpecError) -> None:
        """Keep ``error``'s problems (each once; beyond MAX_PROBLEMS, only counted)."""
        if isinstance(error, Incomplete):
            return
        for problem in error.problems:
            if problem in self.problems[-MAX_PROBLEMS:]:
                continue
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append(problem)
            else:
                self.more += 1

    def incomplete(self) -> Incomplete:
        """What to raise when a value cannot be built from parts whose problems are recorded."""
        assert self.problems, "a value is incomplete only for problems already recorded"
        return Incomplete()

    def attempt(self, read: Callable[..., T], *args: Any) -> T | None:
        """``read(*args)``, or None with its problems recorded: reading goes on."""
        try:
            return read(*args)
        except SpecError as error:
            self.record(error)
            return None

    def fields(self, **reads: Callable[[], Any]) -> dict[str, Any]:
        """Each independent value read, all of their problems recorded; :meth:`incomplete` if
        any failed."""
        values, failed = {}, False
        for key, read in reads.items():
            try:
                values[key] = read()
            except SpecError as error:
                self.record(error)
                failed = True
        if failed:
            raise self.incomplete()
        return values

    def drop_repeats(self, since: int, where: str, shared: str) -> None:
        """Forget the problems recorded since ``since`` under ``where`` (a source's merged
        ``pretrain``) that repeat one of the sweep's section ``shared`` (``pretrain``)."""
        earlier = {(p.where, p.message) for p in self.problems[:since]}
        self.problems[since:] = [
            p
            for p in self.problems[since:]
            if not (
                p.where.startswith(where) and (shared + p.where[len(where) :], p.message) in earlier
            )
        ]

    def error(self) -> SpecError | None:
        """Every recorded problem as one SpecError (in the order of the files' lines: the spec
        file's, its parents', then the overrides'), or None when there are none."""
        if not self.problems:
            return None
        ordered = sorted(
            self.problems,
            key=lambda p: (
                p.origin.startswith("override "),
                p.file != self.source,
                p.file,
                p.line,
                p.column,
            ),
        )
        return SpecError.listing(ordered, self.source, self.more)

    def mapping(
        self,
        value: Any,
        where: str,
        *,
        required: Iterable[str] = (),
        optional: Iterable[str] = (),
    ) -> Section:
        """The known keys of a mapping. Each unknown key is recorded with the closest allowed
        one, each missing required key too (unless an unknown key was suggested as it); reading
        a missing key later raises :class:`Incomplete`."""
        if not isinstance(value, Mapping):
            raise self.fail(where, f"must be a mapping, got {type(value).__name__}")
        required = list(required)
        allowed = [*required, *(k for k in optional if k not in required)]
        listed = ", ".join(sorted(allowed))
        unknown = sorted((k for k in value if k not in allowed), key=str)
        room = max(MAX_PROBLEMS - len(self.problems), 1)
        self.more += len(unknown[room:])  # counted, not described (100,000 typos: fast)
        for key in unknown[:room]:
            self.note(
                where,
                f"unknown key '{clip(str(key), 60)}'; {did_you_mean(key, allowed)}"
                f"allowed keys: {listed}",
                at=child(where, key),
            )
        suggested = {close_match(key, allowed) for key in unknown[:room]}
        for key in required:
            if key not in value and key not in suggested:
                self.note(where, f"missing required key '{key}'")
        return Section((k, v) for k, v in value.items() if k in allowed)

    def keys(self, value: Any, where: str, keys: Keys) -> Section:
        """:meth:`mapping` with a :class:`~raysweep.spec.keys.Keys` table."""
        return self.mapping(value, where, required=keys.required, optional=keys.optional)

    def number(
        self,
        value: Any,
        where: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        strict_minimum: bool = False,
    ) -> float:
        """A real number; strings like ``8/255`` are read as exact fractions."""
        if isinstance(value, bool):
            raise self.fail(where, f"must be a number, got {shown(value)}")
        if isinstance(value, str):
            value = self.fraction(value, where)
        if not isinstance(value, int | float):
            raise self.fail(where, f"must be a number, got {type(value).__name__}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond 1.8e308
            number = float("inf")
        if number != number or number in (float("inf"), float("-inf")):
            raise self.fail(where, f"must be finite, got {shown(value)}")
        if minimum is not None:
            too_small = number <= minimum if strict_minimum else number < minimum
            if too_small:
                bound = ">" if strict_minimum else ">="
                raise self.fail(where, f"must be {bound} {minimum:g}, got {number:g}")
        if maximum is not None and number > maximum:
            raise self.fail(where, f"must be <= {maximum:g}, got {number:g}")
        return number

    def fraction(self, text: str, where: str) -> float:
        """``8/255``, ``0.5`` or ``1e-3`` written as text, read exactly, then as a float."""
        compact = text.replace(" ", "")
        problem = f"must be a number such as 0.5 or 8/255, got {shown(text)}"
        if len(compact) > MAX_NUMBER_CHARS or LARGE_EXPONENT.search(compact):
            raise self.fail(where, problem)
        try:
            return float(Fraction(compact))
        except (ValueError, ZeroDivisionError):
            raise self.fail(where, problem) from None
        except OverflowError:  # 1e400: exact, but beyond a float
            raise self.fail(where, f"must be finite, got {shown(text)}") from None

    def integer(
        self,
        value: Any,
        where: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        why: str = "",
    ) -> int:
        """A whole number in [minimum, maximum]; ``why`` says what the maximum guards."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"must be a whole number, got {shown(value)}")
        if minimum is not None and value < minimum:
            raise self.fail(where, f"must be >= {minimum}, got {shown(value)}")
        if maximum is not None and value > maximum:
            reason = f" ({why})" if why else ""
            raise self.fail(where, f"must be <= {maximum:,}{reason}, got {shown(value)}")
        return value

    def size_or_all(self, value: Any, where: str) -> int | None:
        """An image count >= 1, or ``all`` (the whole training split), read as None."""
        return None if value == ALL_IMAGES else self.integer(value, where, minimum=1)

    def blocks(self, value: Any, where: str) -> int | str:
        """What a fine-tune trains: the head plus the last k blocks, or a Terzi et al. mode."""
        if isinstance(value, str):
            return self.choice(value, where, FINETUNE_MODES)
        return self.integer(value, where, minimum=0)

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"must be true or false, got {shown(value)}")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"must be a non-empty string, got {shown(value)}")
        return value.strip()

    def name(self, value: Any, where: str) -> str:
        """A sweep or source name: it becomes a folder and an MLflow experiment, so it follows
        the one naming rule of :mod:`raysweep.sweepdir`."""
        name = self.text(value, where)
        problem = name_problem(name)
        if problem is not None:
            raise self.fail(where, problem)
        return name

    def choice(self, value: Any, where: str, allowed: Iterable[str]) -> str:
        allowed = list(allowed)
        if not isinstance(value, str) or value not in allowed:
            raise self.fail(
                where,
                f"unknown value {shown(value)}; {did_you_mean(value, allowed)}"
                f"allowed: {', '.join(allowed)}",
            )
        return value

    def sequence(self, value: Any, where: str, *, nonempty: bool = True) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"must be a list, got {type(value).__name__}")
        if nonempty and not value:
            raise self.fail(where, "must not be empty")
        return value

    def unique(self, values: list[Any], where: str) -> list[Any]:
        seen: set[Any] = set()
        for value in values:
            if value in seen:
                raise self.fail(where, f"value {shown(value)} appears twice")
            seen.add(value)
        return values
