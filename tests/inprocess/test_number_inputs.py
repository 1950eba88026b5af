"""Every INT and FLOAT input of every node of the pack: NaN, infinities and values outside the declared range
are refused when the node runs, with a message naming the input, before the node does anything; nodes whose
validate_inputs receives number widgets refuse them before the graph runs too."""

from __future__ import annotations

import inspect

import pytest


def _number_inputs(pack_nodes):
    from comfyui_searchpriors.nodes.comfy_internals import glue as comfy_glue

    cases = []
    for node in pack_nodes.NODES:
        for spec in comfy_glue.number_specs(node):
            cases.append((node.__name__, spec))
    return cases


@pytest.fixture(scope="module")
def cases(pack_nodes):
    return _number_inputs(pack_nodes)


def test_every_node_has_the_check_installed(pack_nodes):
    from comfyui_searchpriors.nodes.comfy_internals import glue as comfy_glue

    assert len(pack_nodes.NODES) >= 16
    for node in pack_nodes.NODES:
        assert node.__searchpriors_node__ is node, node.__name__
        assert node.__dict__["execute"].__func__.__wrapped__ is not None
    specs = {n: comfy_glue.number_specs(getattr(pack_nodes, n)) for n in ("LoadMotionLoRA", "MotionRetriever")}
    assert [s.name for s in specs["LoadMotionLoRA"]] == ["strength"]
    assert {"alpha", "beta", "gamma"} <= {s.name for s in specs["MotionRetriever"]}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "above", "below"])
def test_every_number_input_refuses_bad_values_on_execute(pack_nodes, cases, bad):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    checked = 0
    for node_name, spec in cases:
        node = getattr(pack_nodes, node_name)
        if bad == "above":
            if spec.maximum is None:
                continue
            value = spec.maximum + (1 if spec.kind == "INT" else abs(spec.maximum) * 0.5 + 1.0)
        elif bad == "below":
            if spec.minimum is None:
                continue
            value = spec.minimum - (1 if spec.kind == "INT" else abs(spec.minimum) * 0.5 + 1.0)
        else:
            if spec.kind == "INT":
                continue   # ComfyUI's int() conversion refuses NaN and infinity for INT widgets
            value = bad
        # every other input is None: the check must come before the node touches any of them
        with pytest.raises(SearchPriorsError) as refused:
            node.execute(**{spec.name: value})
        assert f"{spec.name} is " in str(refused.value), (node_name, spec, str(refused.value))
        checked += 1
    assert checked >= 8


def test_linked_values_and_positional_calls_are_checked(pack_nodes):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    with pytest.raises(SearchPriorsError, match="strength is nan"):
        pack_nodes.LoadMotionLoRA.execute(None, "x.safetensors", float("nan"))
    with pytest.raises(SearchPriorsError, match="strength is 1e\\+30, above its maximum of 10"):
        pack_nodes.LoadMotionLoRA.execute(model=None, lora_name="x", strength=1e30)


@pytest.mark.parametrize("name", ["alpha", "beta", "gamma"])
def test_retriever_weights_nan(pack_nodes, name):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    values = dict(atomized=None, index=None, mode="search_t2v", top_k=5, t_total=0.0, t_mot=0.0, t_atr=0.0,
                  alpha=1.0, beta=1.0, gamma=1.0, min_keep=1)
    values[name] = float("nan")
    with pytest.raises(SearchPriorsError, match=f"Motion Retriever: {name} is nan: NaN and infinity"):
        pack_nodes.MotionRetriever.execute(**values)


def test_validators_that_receive_numbers_check_their_ranges(pack_nodes):
    frames = pack_nodes.ReferenceFrames
    assert frames.validate_inputs(frame_count=float("nan"), width=256, height=256).startswith("frame_count is nan")
    assert "width is 100000, above its maximum" in frames.validate_inputs(width=100000)


def test_no_validator_swallows_number_inputs(pack_nodes):
    """validate_inputs with **kwargs, or naming a number input, makes ComfyUI skip its range check: the node
    must then check numbers itself (number_inputs_problem)."""
    from comfyui_searchpriors.nodes.comfy_internals import glue as comfy_glue

    for node in pack_nodes.NODES:
        validate = node.__dict__.get("validate_inputs")
        if validate is None:
            continue
        spec = inspect.getfullargspec(validate.__func__)
        numbers = {s.name for s in comfy_glue.number_specs(node)}
        swallowed = numbers if spec.varkw else numbers & set(spec.args)
        if swallowed:
            source = inspect.getsource(validate.__func__)
            assert "number_inputs_problem" in source, (node.__name__, sorted(swallowed))
