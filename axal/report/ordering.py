"""One order for seeds and budgets across a report: numbers by value, then names.

Seeds and rounds arrive as ints from ``results.json`` and as strings from JSON keys
(``summary.json``); both must sort 2 before 10, and a named seed after every number.
"""

from __future__ import annotations

from typing import Any


def natural_key(value: Any) -> tuple:
    """Sort key: numbers and numeric strings first, by value; anything else after, by name."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))
