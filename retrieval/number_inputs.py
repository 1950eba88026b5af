"""The check every number input of every node gets: finite, and inside the range its schema declares.

ComfyUI checks a widget's min/max only for inputs that the node's ``validate_inputs`` does not name (and for
none once it takes ``**kwargs``), never for a linked value, and never refuses NaN (``NaN < min`` is false)
or, for an input without a max, an infinity. The nodes therefore run this check themselves, from their own
schema, before they do anything (``nodes.comfy_internals.glue.install_number_checks``). No ComfyUI import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from ..errors import SearchPriorsError


@dataclass(frozen=True)
class NumberSpec:
    name: str
    kind: str                        # "INT" or "FLOAT"
    minimum: Optional[float] = None
    maximum: Optional[float] = None

    def allowed(self) -> str:
        lo, hi = _show(self.minimum), _show(self.maximum)
        if self.minimum is not None and self.maximum is not None:
            return f"from {lo} to {hi}"
        if self.minimum is not None:
            return f"of {lo} or more"
        if self.maximum is not None:
            return f"of {hi} or less"
        return "that is finite"


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def number_problem(spec: NumberSpec, value: Any) -> Optional[str]:
    """None when ``value`` is fine for ``spec``, else a message that names the input and the fix.

    None (an optional input left out) and values that are not numbers (checked by the node) pass."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    what = "a whole number" if spec.kind == "INT" else "a number"
    if not math.isfinite(number):
        return (f"{spec.name} is {value!r}: NaN and infinity are not allowed; set {spec.name} to {what} "
                f"{spec.allowed()}.")
    if spec.kind == "INT" and number != int(number):
        return f"{spec.name} is {value!r}, not a whole number; set it to a whole number {spec.allowed()}."
    if spec.minimum is not None and number < spec.minimum:
        return (f"{spec.name} is {_show(value)}, below its minimum of {_show(spec.minimum)}; set it to {what} "
                f"{spec.allowed()}.")
    if spec.maximum is not None and number > spec.maximum:
        return (f"{spec.name} is {_show(value)}, above its maximum of {_show(spec.maximum)}; set it to {what} "
                f"{spec.allowed()}.")
    return None


def first_number_problem(specs: Iterable[NumberSpec], values: Mapping[str, Any]) -> Optional[str]:
    for spec in specs:
        if spec.name in values:
            problem = number_problem(spec, values[spec.name])
            if problem:
                return problem
    return None


def check_numbers(specs: Iterable[NumberSpec], values: Mapping[str, Any], node: str = "") -> None:
    """Raise SearchPriorsError for the first number input of ``values`` that its spec refuses."""
    problem = first_number_problem(specs, values)
    if problem:
        raise SearchPriorsError(f"{node}: {problem}" if node else problem)
