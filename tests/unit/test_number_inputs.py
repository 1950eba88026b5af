"""The shared check of number inputs: finite, whole for INT, within the declared range."""

from __future__ import annotations

import pytest

from comfyui_searchpriors.retrieval.errors import SearchPriorsError
from comfyui_searchpriors.retrieval.number_inputs import NumberSpec, check_numbers, number_problem

STRENGTH = NumberSpec("strength", "FLOAT", -10.0, 10.0)
STEPS = NumberSpec("steps", "INT", 1, 1000)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinities_are_refused_naming_the_input(value):
    problem = number_problem(STRENGTH, value)
    assert problem.startswith("strength is ") and "NaN and infinity" in problem and "from -10 to 10" in problem


@pytest.mark.parametrize("value, word", [(1e30, "above its maximum of 10"), (-10.5, "below its minimum of -10"),
                                         (10.0000001, "above its maximum")])
def test_out_of_range_says_the_bound(value, word):
    assert word in number_problem(STRENGTH, value)


def test_whole_numbers_and_unbounded_specs():
    assert number_problem(STEPS, 1000) is None and number_problem(STEPS, 1) is None
    assert "not a whole number" in number_problem(STEPS, 2.5)
    assert "above its maximum of 1000" in number_problem(STEPS, 1001)
    free = NumberSpec("x", "FLOAT")
    assert number_problem(free, 1e300) is None and "finite" in number_problem(free, float("inf"))


@pytest.mark.parametrize("value", [None, True, "text", [1, 2]])
def test_missing_and_non_numbers_are_left_to_the_node(value):
    assert number_problem(STRENGTH, value) is None


def test_check_numbers_raises_the_first_problem_with_the_node_name():
    check_numbers([STRENGTH, STEPS], {"strength": 1.0, "steps": 50, "other": float("nan")})
    with pytest.raises(SearchPriorsError, match=r"^Load Motion LoRA: steps is 0, below its minimum of 1"):
        check_numbers([STRENGTH, STEPS], {"strength": 1.0, "steps": 0}, node="Load Motion LoRA")
