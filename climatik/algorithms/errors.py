"""Errors an algorithm lookup or step raises; each names what was wrong so that it can become a condition."""

from __future__ import annotations


class AlgorithmError(ValueError):
    """Base class: the policy cannot be served by its algorithm as specified."""

    reason = "InvalidAlgorithm"


class UnknownAlgorithmError(AlgorithmError):
    """No algorithm is registered under the requested name."""

    reason = "UnknownAlgorithmError"

    def __init__(self, name: str, known: list[str], detail: str | None = None) -> None:
        self.name = name
        self.known = known
        message = f"unknown algorithm {name!r}; registered: {', '.join(known) or 'none'}"
        super().__init__(f"{message} ({detail})" if detail else message)


class InvalidParameterError(AlgorithmError):
    """A parameter is unknown, unparsable or out of range."""

    reason = "InvalidParameterError"

    def __init__(self, algorithm: str, parameter: str, value: str | None, problem: str) -> None:
        self.algorithm = algorithm
        self.parameter = parameter
        self.value = value
        shown = "" if value is None else f"={value!r}"
        super().__init__(f"algorithm {algorithm!r}: parameter {parameter!r}{shown}: {problem}")


class AlgorithmFailedError(AlgorithmError):
    """The algorithm raised or returned something the framework cannot use (a bug in the algorithm)."""

    reason = "AlgorithmFailedError"

    def __init__(self, algorithm: str, problem: str) -> None:
        self.algorithm = algorithm
        super().__init__(f"algorithm {algorithm!r} failed: {problem}")
