"""User-facing errors of the pack: each message names what was wrong and how to fix it.

Nodes let these propagate so that ComfyUI shows the message on the node; the CLI prints them and exits
non-zero. Anything else that escapes is a bug.
"""


class SearchPriorsError(ValueError):
    """Bad input or state that the user can fix; the message says how."""


class MissingDependencyError(SearchPriorsError):
    """An optional package is not installed."""

    def __init__(self, package: str, purpose: str):
        super().__init__(f"{purpose} needs the Python package '{package}', which is not installed. "
                         f"Install it into ComfyUI's Python environment: pip install {package}")
        self.package = package


class MotionIndexError(SearchPriorsError):
    """A motion index folder is missing, damaged, foreign or built with other models."""


class BuildCancelled(Exception):
    """Raised by a progress callback to stop a long loop; partial work stays consistent."""
