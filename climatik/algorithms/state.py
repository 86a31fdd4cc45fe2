"""Algorithm state as the recommender persists it in status.recommendation.state: compact JSON, bounded size."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

#: The CRD's maxLength for status.recommendation.state.
MAX_STATE_CHARS = 4096


class StateTooLargeError(ValueError):
    """An algorithm's state does not fit the status field."""


def encode_state(state: Mapping[str, Any]) -> str:
    """Compact, key-sorted JSON (identical state gives identical text, so an unchanged status is not rewritten)."""
    try:
        text = json.dumps(state, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise StateTooLargeError(f"state is not plain JSON: {err}") from None
    if len(text) > MAX_STATE_CHARS:
        raise StateTooLargeError(f"state is {len(text)} characters, more than {MAX_STATE_CHARS}")
    return text


def decode_state(text: str | None) -> dict[str, Any]:
    """The state from its persisted text; {} (a fresh start) for none or for text that is not a JSON object."""
    if not text:
        return {}
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid state")


def as_float(value: Any) -> float | None:
    """A finite number read back from state, or None; state is user-editable text, so trust nothing."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
