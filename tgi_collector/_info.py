"""ModelInfo and the reading of TGI's ``GET /info`` JSON document into it.

Why it is separate: ``/info`` is a different endpoint and a different format (JSON, model
identity and limits) from the ``/metrics`` exposition that the rest of :mod:`tgi_collector.tgi`
turns into a view; nothing here depends on metrics. Both names are re-exported by
:mod:`tgi_collector.tgi`, which is where callers import them from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelInfo", "model_info_from_json"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Model identity from TGI's ``GET /info``."""

    model_id: str = ""
    model_sha: str = ""
    model_dtype: str = ""
    version: str = ""
    max_input_tokens: int = 0
    max_total_tokens: int = 0
    max_concurrent_requests: int = 0


# ModelInfo's integers travel as uint32; larger or negative limits are not real settings.
_UINT32_MAX = 2**32 - 1
_DIGITS = re.compile(r"[0-9]{1,10}")


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _limit(value: object) -> int | None:
    """A non-negative integer setting read from JSON, or None when it is not one.

    Accepts JSON integers, integral floats (``512.0``) and decimal strings (``"512"``);
    refuses booleans (``True`` is an int in Python), fractions, negatives and overflow.
    """
    number: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():  # False for inf and NaN
        number = int(value)
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip())
    if number is None or not 0 <= number <= _UINT32_MAX:
        return None
    return number


def model_info_from_json(document: Any) -> ModelInfo:
    """Read a ``GET /info`` JSON document; unknown, missing or ill-typed fields are left empty.

    ``max_input_tokens`` falls back to ``max_input_length``, its name before TGI 2.1. Never
    raises: a document that is not a JSON object gives an empty :class:`ModelInfo`.
    """
    if not isinstance(document, Mapping):
        return ModelInfo()
    max_input = _limit(document.get("max_input_tokens"))
    if max_input is None:
        max_input = _limit(document.get("max_input_length"))
    return ModelInfo(
        model_id=_text(document.get("model_id")),
        model_sha=_text(document.get("model_sha")),
        model_dtype=_text(document.get("model_dtype")),
        version=_text(document.get("version")),
        max_input_tokens=max_input or 0,
        max_total_tokens=_limit(document.get("max_total_tokens")) or 0,
        max_concurrent_requests=_limit(document.get("max_concurrent_requests")) or 0,
    )
