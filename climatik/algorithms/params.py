"""Parsing of algorithm parameters, which arrive as strings in the policy spec, into checked values."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from climatik.algorithms.errors import InvalidParameterError

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class ParamReader:
    """Reads one algorithm's parameters; every problem raises InvalidParameterError naming the parameter and value.

    Construction rejects parameters the algorithm does not know, so a typo is never silently ignored.
    """

    def __init__(self, algorithm: str, parameters: Mapping[str, str] | None, known: Iterable[str]) -> None:
        self.algorithm = algorithm
        self._values = dict(parameters or {})
        known_names = sorted(known)
        for name, value in sorted(self._values.items()):
            if name not in known_names:
                raise InvalidParameterError(algorithm, name, value,
                                       f"unknown parameter; known: {', '.join(known_names) or 'none'}")
            if not isinstance(value, str):
                raise InvalidParameterError(algorithm, name, repr(value), "must be a string")

    def number(self, name: str, default: float, *, minimum: float | None = None, maximum: float | None = None,
               exclusive: bool = False) -> float:
        """A finite decimal number within [minimum, maximum] (or the open interval when `exclusive`)."""
        text = self._values.get(name)
        if text is None:
            return default
        try:
            value = float(text.strip())
        except ValueError:
            raise InvalidParameterError(self.algorithm, name, text, "not a number") from None
        if not math.isfinite(value):
            raise InvalidParameterError(self.algorithm, name, text, "must be a finite number")
        self._check_range(name, text, value, (minimum, maximum), exclusive=exclusive)
        return value

    def integer(self, name: str, default: int | None, *, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        """A whole number within [minimum, maximum]; `default` (possibly None) when absent."""
        text = self._values.get(name)
        if text is None:
            return default
        try:
            value = int(text.strip())
        except ValueError:
            raise InvalidParameterError(self.algorithm, name, text, "not a whole number") from None
        self._check_range(name, text, value, (minimum, maximum), exclusive=False)
        return value

    def boolean(self, name: str, default: bool) -> bool:
        """true/false (also yes/no, on/off, 1/0), any case."""
        text = self._values.get(name)
        if text is None:
            return default
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise InvalidParameterError(self.algorithm, name, text, "must be true or false")

    def _check_range(self, name: str, text: str, value: float, bounds: tuple[float | None, float | None], *,
                     exclusive: bool) -> None:
        minimum, maximum = bounds
        low_bad = minimum is not None and (value <= minimum if exclusive else value < minimum)
        high_bad = maximum is not None and (value >= maximum if exclusive else value > maximum)
        if low_bad or high_bad:
            low = "(" if exclusive else "["
            high = ")" if exclusive else "]"
            shown = f"{low}{_fmt(minimum, '-inf')}, {_fmt(maximum, 'inf')}{high}"
            raise InvalidParameterError(self.algorithm, name, text, f"out of range {shown}")


def _fmt(bound: float | None, unbounded: str) -> str:
    if bound is None:
        return unbounded
    return str(int(bound)) if float(bound).is_integer() else str(bound)
