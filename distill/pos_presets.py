"""The POS paper's per-model hyper-parameters (Table 1, pos.txt): eta of Eq. 4 and gamma of Eq. 8.

Each backbone was tuned per dataset; where MSR-VTT and UCF-101 differ, both rows are here. "custom" means
"use the node's own eta / gamma widgets" and is every node's default, so a preset is only ever a choice.
The pack's widget defaults are the ModelScope / MSR-VTT pair (eta 0.2, gamma 0.04): ModelScope is the
paper's main backbone and the pack's own (the diffusers-folder loader), and one row keeps the two
defaults from disagreeing. Pure Python, no ComfyUI import.
"""

from __future__ import annotations

from typing import Optional

from ..errors import SearchPriorsError

CUSTOM = "custom"

# name -> (eta, gamma), in Table 1's order (Tune-A-Video, VideoCrafter, ModelScope, SCVideo)
POS_PRESETS: dict[str, tuple[float, float]] = {
    "Tune-A-Video (MSR-VTT, UCF-101): eta 0.1, gamma 0.5": (0.1, 0.5),
    "VideoCrafter (MSR-VTT, UCF-101): eta 0.3, gamma 0.1": (0.3, 0.1),
    "ModelScope (MSR-VTT): eta 0.2, gamma 0.04": (0.2, 0.04),
    "ModelScope (UCF-101): eta 0.2, gamma 1.0": (0.2, 1.0),
    "SCVideo (MSR-VTT): eta 0.5, gamma 0.1": (0.5, 0.1),
    "SCVideo (UCF-101): eta 0.5, gamma 1.0": (0.5, 1.0),
}
PRESET_CHOICES = [CUSTOM, *POS_PRESETS]
DEFAULT_ETA, DEFAULT_GAMMA = POS_PRESETS["ModelScope (MSR-VTT): eta 0.2, gamma 0.04"]


def preset_values(preset: Optional[str]) -> Optional[tuple[float, float]]:
    """(eta, gamma) of a preset, or None for "custom" (use the widgets)."""
    if preset is None or preset == CUSTOM:
        return None
    if preset not in POS_PRESETS:
        raise SearchPriorsError(f"Unknown POS preset '{preset}': choose '{CUSTOM}' (the eta / gamma widgets) or "
                                f"one of: {'; '.join(POS_PRESETS)}.")
    return POS_PRESETS[preset]


def resolve(preset: Optional[str], eta: Optional[float] = None,
            gamma: Optional[float] = None) -> tuple[Optional[float], Optional[float], str]:
    """(eta, gamma, note): the preset's values in place of the widgets' unless it is "custom"."""
    values = preset_values(preset)
    if values is None:
        return eta, gamma, ""
    return values[0], values[1], f"preset '{preset}'"
