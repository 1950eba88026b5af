"""The POS paper's per-model eta / gamma table (pos.txt, Table 1) as presets."""

from __future__ import annotations

import pytest

from comfyui_searchpriors.distill.pos_presets import CUSTOM, POS_PRESETS, PRESET_CHOICES, preset_values, resolve
from comfyui_searchpriors.retrieval.errors import SearchPriorsError


def test_the_table_is_the_papers():
    # Table 1 of POS: "+ POS" rows, MSR-VTT and UCF-101 columns
    assert sorted(POS_PRESETS.values()) == sorted([(0.1, 0.5), (0.3, 0.1), (0.2, 0.04), (0.2, 1.0), (0.5, 0.1),
                                                   (0.5, 1.0)])
    for name, (eta, gamma) in POS_PRESETS.items():
        assert name.endswith(f"eta {eta:g}, gamma {gamma:g}".replace("gamma 1", "gamma 1.0")), name
    assert PRESET_CHOICES[0] == CUSTOM


def test_custom_keeps_the_widgets_and_a_preset_replaces_them():
    assert preset_values(CUSTOM) is None and resolve(CUSTOM, 0.7, 0.3) == (0.7, 0.3, "")
    name = "SCVideo (UCF-101): eta 0.5, gamma 1.0"
    assert resolve(name, 0.7, 0.3) == (0.5, 1.0, f"preset '{name}'")
    with pytest.raises(SearchPriorsError, match="Unknown POS preset 'x'"):
        resolve("x", 0.1, 0.1)
