"""distill/group_norm.py: the whole-video GroupNorm reduced across the GPU computes PyTorch's GroupNorm.

The parallel path is meant for CUDA; here it is forced on the CPU (``require_cuda = False``, ``MIN_ROW = 0``)
so that its arithmetic is checked against ``F.group_norm`` and a literal per-group loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from comfyui_searchpriors.distill import group_norm as gn


def literal_group_norm(x, groups, weight, bias, eps):
    """Per sample, per group: subtract the mean, divide by sqrt(var + eps) (biased variance), then affine."""
    x = x.double()
    n, c = x.shape[:2]
    out = torch.empty_like(x)
    per = c // groups
    for i in range(n):
        for g in range(groups):
            block = x[i, g * per:(g + 1) * per]
            out[i, g * per:(g + 1) * per] = (block - block.mean()) / torch.sqrt(block.var(unbiased=False) + eps)
    shape = (1, c) + (1,) * (x.ndim - 2)
    if weight is not None:
        out = out * weight.double().reshape(shape)
    if bias is not None:
        out = out + bias.double().reshape(shape)
    return out


@pytest.fixture
def parallel_calls(monkeypatch):
    """Records every call of the parallel path (its input's shape) and still runs it."""
    calls, real = [], gn.parallel_group_norm
    monkeypatch.setattr(gn, "parallel_group_norm", lambda *a, **k: calls.append(tuple(a[0].shape)) or real(*a, **k))
    return calls


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setattr(gn.FewRowsGroupNorm, "require_cuda", False)
    monkeypatch.setattr(gn, "MIN_ROW", 0)


@pytest.mark.parametrize("shape", [(1, 64, 3, 5, 7), (2, 64, 4, 6, 6), (1, 32, 9, 9)])
def test_parallel_group_norm_equals_the_literal_definition(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g) * 3 + 1.5  # a mean and a scale that a wrong reduction would show
    weight, bias = torch.randn(shape[1], generator=g), torch.randn(shape[1], generator=g)
    got = gn.parallel_group_norm(x, 32, weight, bias, 1e-6)
    want = literal_group_norm(x, 32, weight, bias, 1e-6)
    assert got.dtype == x.dtype and got.shape == x.shape
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, F.group_norm(x, 32, weight, bias, 1e-6), rtol=1e-5, atol=1e-5)


def test_parallel_group_norm_without_affine_and_in_bf16():
    x = torch.randn(1, 64, 4, 8, 8, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    got = gn.parallel_group_norm(x, 32, None, None, 1e-5)
    assert got.dtype == torch.bfloat16
    want = F.group_norm(x.float(), 32, None, None, 1e-5)  # statistics in float32, as PyTorch's kernel keeps them
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


def test_channels_that_do_not_split_into_groups_are_refused():
    with pytest.raises(ValueError, match="do not split"):
        gn.parallel_group_norm(torch.randn(1, 30, 4, 4), 32, None, None, 1e-5)


def test_swapping_keeps_parameters_and_state_dict_and_the_output(forced, parallel_calls):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.GroupNorm(32, 64), torch.nn.Conv3d(64, 64, 1), torch.nn.GroupNorm(32, 64))
    for p in model.parameters():
        p.data.normal_()
    x = torch.randn(1, 64, 3, 4, 5)
    with torch.no_grad():
        before_out = model(x)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    ids = [id(p) for p in model.parameters()]
    assert gn.use_few_rows_group_norm(model) == 2
    assert gn.use_few_rows_group_norm(model) == 0  # already swapped
    assert all(type(m) is gn.FewRowsGroupNorm for m in (model[0], model[2]))
    assert [id(p) for p in model.parameters()] == ids
    assert model.state_dict().keys() == before_state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before_state.items())
    with torch.no_grad():
        after_out = model(x)
    assert len(parallel_calls) == 2
    torch.testing.assert_close(after_out, before_out, rtol=1e-5, atol=1e-5)
    assert gn.use_few_rows_group_norm(model, parallel=False) == 2  # and back to PyTorch's, as the benchmarks do
    assert all(type(m) is torch.nn.GroupNorm for m in (model[0], model[2]))
    assert [id(p) for p in model.parameters()] == ids
    with torch.no_grad():
        assert torch.equal(model(x), before_out)


def test_autograd_and_many_rows_take_pytorchs_kernel(forced, monkeypatch):
    """Training (VMC) and the per-frame norms (frames x groups rows) keep PyTorch's own GroupNorm."""
    norm = gn.FewRowsGroupNorm(32, 64)
    monkeypatch.setattr(gn, "parallel_group_norm", lambda *a, **k: pytest.fail("parallel path taken"))
    x = torch.randn(1, 64, 3, 4, 4, requires_grad=True)
    norm(x).sum().backward()  # grad enabled: PyTorch's kernel, gradients flow
    assert x.grad is not None and norm.weight.grad is not None
    with torch.no_grad():
        norm(torch.randn(gn.ROWS // 32, 64, 4, 4))  # ROWS rows: PyTorch's kernel


def test_cuda_only_by_default_and_large_rows_only(parallel_calls):
    norm = gn.FewRowsGroupNorm(32, 64)
    assert norm.require_cuda is True
    with torch.no_grad():
        norm(torch.randn(1, 64, 3, 4, 4))  # CPU tensor: PyTorch's kernel
        norm.require_cuda = False
        norm(torch.randn(1, 64, 3, 4, 4))  # rows of 2 x 48 values < MIN_ROW: PyTorch's kernel
    assert parallel_calls == []


def test_patched_weights_are_used_whether_replaced_or_changed_in_place(forced):
    """ComfyUI patches weights by swapping the tensors or, in its in-place mode, by copying into them."""
    norm = gn.FewRowsGroupNorm(32, 64)
    x = torch.randn(2, 64, 2, 3, 3)
    with torch.no_grad():
        norm(x)
        norm.weight = torch.nn.Parameter(torch.full((64,), 2.0))
        torch.testing.assert_close(norm(x), F.group_norm(x, 32, norm.weight, norm.bias, norm.eps), rtol=1e-5,
                                   atol=1e-5)
        norm.bias.copy_(torch.linspace(-1, 1, 64))
        norm.weight.mul_(0.5)
        torch.testing.assert_close(norm(x), F.group_norm(x, 32, norm.weight, norm.bias, norm.eps), rtol=1e-5,
                                   atol=1e-5)
        torch.testing.assert_close(norm(x[:1]), F.group_norm(x[:1], 32, norm.weight, norm.bias, norm.eps),
                                   rtol=1e-5, atol=1e-5)


def test_a_failing_parallel_path_falls_back_for_good(forced, monkeypatch, caplog):
    """A backend without an op or dtype mix the parallel path needs: PyTorch's kernel, once and for all."""
    monkeypatch.setattr(gn.FewRowsGroupNorm, "disabled", None)
    tried = []

    def unsupported(*args, **kwargs):
        tried.append(1)
        raise RuntimeError("batch_norm: mixed dtypes not supported on this device")

    monkeypatch.setattr(gn, "parallel_group_norm", unsupported)
    norm = gn.FewRowsGroupNorm(32, 64)
    x = torch.randn(1, 64, 3, 4, 4)
    with torch.no_grad(), caplog.at_level("WARNING"):
        first, second = norm(x), gn.FewRowsGroupNorm(32, 64)(x)
    torch.testing.assert_close(first, F.group_norm(x, 32, norm.weight, norm.bias, norm.eps))
    torch.testing.assert_close(second, first)
    assert tried == [1]  # not tried again, by any instance
    assert "mixed dtypes" in gn.FewRowsGroupNorm.disabled and "falls back" in caplog.text
