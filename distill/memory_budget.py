"""How much memory a node may allocate from sizes a workflow gives (frames x height x width), checked before
anything is decoded or allocated. No ComfyUI import.

The budget is the environment variable SEARCHPRIORS_MAX_ALLOC_MB (mebibytes) when set, else half of this
machine's physical memory: a workflow from a stranger (or a typo) asking for 24 frames at 8192x8192
(~24 GB) is refused with the numbers instead of filling the machine.
"""

from __future__ import annotations

import os
from typing import Optional

from ..errors import SearchPriorsError

BUDGET_ENV = "SEARCHPRIORS_MAX_ALLOC_MB"
FALLBACK_BYTES = 8 * 1024 ** 3     # when the machine's memory cannot be read
MiB = 1024 ** 2


class MemoryBudgetError(SearchPriorsError):
    """A request whose sizes need more memory than the budget; the message gives the numbers."""


def physical_memory_bytes() -> Optional[int]:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def budget_bytes() -> int:
    """SEARCHPRIORS_MAX_ALLOC_MB, else half of the physical memory (8 GiB when it is unknown)."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value > 0 or value != value or value == float("inf"):
            raise MemoryBudgetError(f"The environment variable {BUDGET_ENV} is '{raw}': set it to a number of "
                                    f"MiB above 0 (e.g. 8192), or unset it for half of this machine's memory.")
        return int(value * MiB)
    total = physical_memory_bytes()
    return total // 2 if total else FALLBACK_BYTES


def _describe_budget() -> str:
    if os.environ.get(BUDGET_ENV, "").strip():
        return f"the budget set in {BUDGET_ENV}"
    return "the budget of half this machine's memory"


def check_allocation(what: str, nbytes: int, fix: str) -> None:
    """Refuse ``nbytes`` above the budget: ``what`` says what is sized how, ``fix`` which input to lower."""
    budget = budget_bytes()
    if nbytes > budget:
        raise MemoryBudgetError(
            f"{what} needs about {nbytes / MiB:,.0f} MiB, more than {_describe_budget()} ({budget / MiB:,.0f} MiB). "
            f"{fix} (or raise {BUDGET_ENV}, in MiB, before starting ComfyUI).")
