"""Small readers that turn raw YAML values into typed values, or a one-line SpecError.

Every reader takes a ``where`` path (``sources[1].training.eps``) so that an error names the
exact key, what was found and what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

from raysweep.models.names import FINETUNE_MODES
from raysweep.schema import ALL_IMAGES


class SpecError(ValueError):
    """A sweep spec that cannot run; the message is one line naming file, key and the fix."""


class Reader:
    """Reads one YAML file's values, prefixing every error with the file name."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> SpecError:
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
        unknown = sorted(str(k) for k in value if k not in allowed)
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
            raise self.fail(where, f"must be a number, got {value!r}")
        if isinstance(value, str):
            try:
                value = float(Fraction(value.replace(" ", "")))
            except (ValueError, ZeroDivisionError):
                raise self.fail(
                    where, f"must be a number such as 0.5 or 8/255, got {value!r}"
                ) from None
        if not isinstance(value, int | float):
            raise self.fail(where, f"must be a number, got {type(value).__name__}")
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise self.fail(where, f"must be finite, got {value!r}")
        if minimum is not None:
            too_small = number <= minimum if strict_minimum else number < minimum
            if too_small:
                bound = ">" if strict_minimum else ">="
                raise self.fail(where, f"must be {bound} {minimum:g}, got {number:g}")
        if maximum is not None and number > maximum:
            raise self.fail(where, f"must be <= {maximum:g}, got {number:g}")
        return number

    def integer(self, value: Any, where: str, *, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"must be a whole number, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(where, f"must be >= {minimum}, got {value}")
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
            raise self.fail(where, f"must be true or false, got {value!r}")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def choice(self, value: Any, where: str, allowed: Iterable[str]) -> str:
        allowed = list(allowed)
        if not isinstance(value, str) or value not in allowed:
            raise self.fail(where, f"unknown value {value!r}; allowed: {', '.join(allowed)}")
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
                raise self.fail(where, f"value {value!r} appears twice")
            seen.add(value)
        return values
