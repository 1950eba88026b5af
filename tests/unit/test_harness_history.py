"""The test harness's /history helpers (scripts/comfy_server.py): what a failed prompt's assertion says."""

from __future__ import annotations

import pytest


def test_assert_success_names_the_failing_node(comfy_harness):
    ok = {"status": {"status_str": "success", "completed": True, "messages": []}}
    comfy_harness.assert_success(ok, "a graph")
    failed = {"status": {"status_str": "error", "completed": False, "messages": [
        ["execution_start", {"prompt_id": "p"}],
        ["execution_error", {"node_id": "7", "node_type": "SearchPriors_GaussianNoiseMix",
                             "exception_type": "SearchPriorsError", "exception_message": "eta is -1"}]]}}
    with pytest.raises(AssertionError, match=r"a graph ended with status 'error': SearchPriors_GaussianNoiseMix "
                                             r"\(node 7\): SearchPriorsError: eta is -1"):
        comfy_harness.assert_success(failed, "a graph")
    with pytest.raises(AssertionError, match="status '': None"):
        comfy_harness.assert_success({}, "a graph")
