"""Small readers that turn raw YAML values into typed values, or a one-line SpecError.

Every reader takes a ``where`` path (``sources[1].training.eps``) so that an error names the
exact key, what was found and what is allowed. A user value quoted in an error goes through
:func:`shown`, so one error line stays a few hundred characters whatever the value (a 100,000
element list, a megabyte string): the message is for a terminal, not a dump.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

from raysweep.models.names import FINETUNE_MODES
from raysweep.schema import ALL_IMAGES
from raysweep.sweepdir import name_problem


class SpecError(ValueError):
    """A sweep spec that cannot run; the message is one line naming file, key and the fix."""


#: Longest key path and message text of one error; only pathological input comes near them
#: (the longest message of a valid vocabulary, unknown published model + the known list, is
#: under 400 characters).
MAX_WHERE_CHARS = 120
MAX_MESSAGE_CHARS = 400
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


class Reader:
    """Reads one YAML file's values, prefixing every error with the file name."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> SpecError:
        # The clips are a backstop: the readers already quote values through shown().
        where, message = clip(where, MAX_WHERE_CHARS), clip(message, MAX_MESSAGE_CHARS)
        return SpecError(f"{self.source}: {where}: {message}")

    def mapping(
        self,
        value: Any,
        where: str,
        *,
        required: Iterable[str] = (),
        optional: Iterable[str] = (),
    ) -> Mapping[str, Any]:
        """A mapping whose keys are all known and whose required keys are present."""
        if not isinstance(value, Mapping):
            raise self.fail(where, f"must be a mapping, got {type(value).__name__}")
        required = list(required)
        allowed = set(required) | set(optional)
        unknown = sorted(clip(str(k), 60) for k in value if k not in allowed)
        if unknown:
            raise self.fail(
                where, f"unknown key '{unknown[0]}'; allowed keys: {', '.join(sorted(allowed))}"
            )
        for key in required:
            if key not in value:
                raise self.fail(where, f"missing required key '{key}'")
        return value

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
            raise self.fail(where, f"unknown value {shown(value)}; allowed: {', '.join(allowed)}")
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
