"""The pack's errors live at the package root (``errors.py``, shared by ``retrieval``, ``distill`` and ``nodes``);
this module keeps the name that imports written before the move use."""

from ..errors import BuildCancelled, MissingDependencyError, MotionIndexError, SearchPriorsError

__all__ = ["BuildCancelled", "MissingDependencyError", "MotionIndexError", "SearchPriorsError"]
