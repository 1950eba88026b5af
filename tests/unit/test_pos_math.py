"""POS generation math without ComfyUI: Eq. 4 (noise mix), Eq. 8 (switch step), Eq. 2 (inversion step)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from comfyui_searchpriors.distill import hybrid_semantics as hs
from comfyui_searchpriors.distill import inversion as inv
from comfyui_searchpriors.distill import noise_mix as nm

# ------------------------------------------------------------------------------------------------ Eq. 4


def literal_eq4(eps, eps_inv, eta):
    return 1 / math.sqrt(1 + eta ** 2) * eps + eta / math.sqrt(1 + eta ** 2) * eps_inv


@pytest.mark.parametrize("eta", [0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 4.0])
def test_mix_matches_the_papers_formula(eta):
    g = torch.Generator().manual_seed(1)
    eps, eps_inv = torch.randn(2, 16, 3, 8, 8, generator=g), torch.randn(2, 16, 3, 8, 8, generator=g)
    before = eps_inv.clone()
    mixed = nm.mix_noise(eps, eps_inv, eta)
    torch.testing.assert_close(mixed, literal_eq4(eps, eps_inv, eta), rtol=1e-6, atol=1e-6)
    assert torch.equal(eps_inv, before)


def test_eta_zero_is_the_random_noise_itself():
    eps = torch.randn(4, 4, 8, 8)
    assert nm.mix_noise(eps, torch.randn(4, 4, 8, 8), 0.0) is eps
    assert nm.mix_noise(eps, torch.randn(4, 4, 8, 8), 0) is eps


@pytest.mark.parametrize("eta", [0.2, 0.5, 1.0, 3.0])
def test_mix_keeps_unit_variance_on_large_samples(eta):
    g = torch.Generator().manual_seed(7)
    eps, eps_inv = torch.randn(2_000_000, generator=g), torch.randn(2_000_000, generator=g)
    mixed = nm.mix_noise(eps, eps_inv, eta)
    assert abs(float(mixed.std()) - 1.0) < 3e-3 and abs(float(mixed.mean())) < 3e-3
    # and the formula for a non-unit inverted part
    assert abs(float(nm.mix_noise(eps, 0.5 * eps_inv, eta).std()) - nm.mixed_std(0.5, eta)) < 3e-3


def test_mix_keeps_dtype_and_refuses_bad_eta():
    eps = torch.randn(2, 4, 4, 4, dtype=torch.float16)
    assert nm.mix_noise(eps, torch.randn(2, 4, 4, 4), 0.3).dtype == torch.float16
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eta"):
            nm.mix_noise(eps, eps.float(), bad)


def test_fit_inverted_shape_rules():
    video = torch.randn(1, 16, 5, 8, 8)
    assert nm.fit_inverted(video, (1, 16, 5, 8, 8)) is video
    assert nm.fit_inverted(video, (3, 16, 5, 8, 8)).shape == (3, 16, 5, 8, 8)  # one video over a batch
    frames = torch.randn(8, 4, 8, 8)
    torch.testing.assert_close(nm.fit_inverted(frames, (2, 4, 8, 8), batch_index=[2, 5]), frames[[2, 5]])
    cases = [
        (video, (1, 16, 4, 8, 8), "frames differ: inverted noise has 5, the latent has 4"),
        (video, (1, 4, 5, 8, 8), "channels differ: inverted noise has 16, the latent has 4"),
        (video, (1, 16, 5, 8, 10), "width differ"),
        (video, (1, 16, 5, 6, 8), "height differ"),
        (video, (16, 4, 8, 8), "layout mismatch: the inverted noise is 5-D"),
        (frames, (16, 4, 8, 8), r"frames \(frames-as-batch latents\) differ: inverted noise has 8, the latent has 16"),
        (torch.randn(1, 4, 8, 8), (16, 4, 8, 8), "frames"),  # no silent broadcast of one frame over a video
    ]
    for have, target, message in cases:
        with pytest.raises(nm.NoiseShapeError, match=message):
            nm.fit_inverted(have, target)


# ------------------------------------------------------------------------------------------------ Eq. 8


def exact_floor(total, gamma_text):
    return math.floor(Fraction(gamma_text) * total)


@pytest.mark.parametrize("total", [1, 7, 10, 20, 25, 30, 50, 100, 1000])
@pytest.mark.parametrize("gamma_text", ["0", "0.01", "0.04", "0.07", "0.1", "0.14", "0.2", "0.28", "0.29", "0.3",
                                        "0.33", "0.5", "0.57", "0.58", "0.7", "0.9", "0.99", "1"])
def test_switch_step_is_the_exact_floor_of_the_decimal(total, gamma_text):
    assert hs.switch_step(total, float(gamma_text)) == exact_floor(total, gamma_text)


def test_switch_step_float_edge_cases():
    assert math.floor(0.29 * 100) == 28  # the trap
    assert hs.switch_step(100, 0.29) == 29
    assert hs.switch_step(100, 0.57) == 57 and math.floor(0.57 * 100) == 56
    assert hs.switch_step(100, 0.1 + 0.19) == 29          # 0.29000000000000004 from widget arithmetic
    assert hs.switch_step(100, 0.28999999999999998) == 29  # the same float as 0.29
    assert hs.switch_step(100, 0.2899) == 28
    assert hs.switch_step(50, 0.04) == 2                   # the paper's ModelScope / MSR-VTT setting
    assert hs.switch_step(0, 0.5) == 0
    assert hs.switch_step(20, 0.5, override=3) == 3 and hs.switch_step(20, 0.5, override=99) == 20
    assert hs.switch_step(20, 0.5, override=-1) == 10
    for bad in (-0.01, 1.01, float("nan")):
        with pytest.raises(ValueError, match="gamma"):
            hs.switch_step(20, bad)


def test_step_of_a_call_uses_the_inclusive_upper_bound():
    sigmas = [10.0, 5.0, 2.0, 1.0, 0.0]
    assert [hs.step_of_sigma(s, sigmas) for s in (10.0, 7.0, 5.0, 3.0, 2.0, 1.5, 1.0, 0.5)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert hs.step_of_sigma(12.0, sigmas) == 0 and hs.step_of_sigma(0.0, sigmas) == 4
    m = 2  # steps 0 and 1 rewritten: calls with sigma > sigmas[2] = 2.0
    assert [hs.uses_rewritten(s, sigmas, m) for s in (10.0, 5.0, 2.5, 2.0, 1.0)] == [True, True, True, False, False]
    assert not any(hs.uses_rewritten(s, sigmas, 0) for s in (99.0, 10.0, 1.0))
    assert all(hs.uses_rewritten(s, sigmas, 4) for s in (10.0, 1.0, 0.0))  # m = T: everything, even sigma 0
    for s in (10.0, 7.0, 5.0, 2.5, 2.0, 1.0):
        assert hs.uses_rewritten(s, sigmas, m) == (hs.step_of_sigma(s, sigmas) < m)
    assert "steps 0..1" in hs.describe_schedule(sigmas, 2)


# ------------------------------------------------------------------------------------------------ Eq. 2


def linear_alphas_cumprod(n=1000, start=0.00085, end=0.012):
    betas = torch.linspace(start ** 0.5, end ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


ALPHAS = linear_alphas_cumprod()
TIMESTEPS = [0, 99, 199, 299, 399, 499, 599, 699, 799, 899, 999]  # inversion path (t = 0 is the clean latent)


def alpha(t):
    return 1.0 if t is None else float(ALPHAS[t])


def sigma_of(t):
    return 0.0 if t is None else math.sqrt((1 - alpha(t)) / alpha(t))


class EpsNet:
    """A nonlinear eps_theta(z, t) in the VP (alpha) convention."""

    def __init__(self, shape, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.w = 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
        self.b = torch.randn(shape, generator=g, dtype=torch.float64)

    def __call__(self, z, t):
        return torch.tanh(self.w * z + self.b * (t / 1000.0)) + 0.1 * z


def comfy_denoise(net, t_of_sigma):
    """ComfyUI's EPS convention: x = z / sqrt(alpha), model input x / sqrt(1 + sigma^2), D = x - sigma * eps."""

    def denoise(x, sigma):
        z = x / math.sqrt(1 + sigma ** 2)
        return x - sigma * net(z, t_of_sigma[sigma])

    return denoise


def literal_eq2(z_t, t, t_next, eps):
    """POS Eq. 2 as printed:
    z_{t+1} = sqrt(a_{t+1}) (z_t / sqrt(a_t) + (sqrt((1-a_{t+1})/a_{t+1}) - sqrt((1-a_t)/a_t)) eps)."""
    a, a_next = alpha(t), alpha(t_next)
    return math.sqrt(a_next) * (z_t / math.sqrt(a) + (math.sqrt((1 - a_next) / a_next) - math.sqrt((1 - a) / a)) * eps)


def literal_eq1(z_t, t, t_prev, eps):
    """POS Eq. 1 (the sampling step DN) as printed."""
    a, a_prev = alpha(t), alpha(t_prev)
    return math.sqrt(a_prev) * (z_t / math.sqrt(a) + (math.sqrt((1 - a_prev) / a_prev) - math.sqrt((1 - a) / a)) * eps)


def test_one_step_equals_literal_ddim_eq2_for_a_given_eps():
    g = torch.Generator().manual_seed(3)
    eps_field = torch.randn(2, 4, 6, 6, generator=g, dtype=torch.float64)
    z0 = torch.randn(2, 4, 6, 6, generator=g, dtype=torch.float64)
    path = [None] + TIMESTEPS[1:]  # t=None: alpha 1, sigma 0
    z, x = z0, z0.clone()
    for t, t_next in zip(path, path[1:]):
        s, s_next = sigma_of(t), sigma_of(t_next)
        x_new, residual, calls = inv.inversion_step(lambda xx, ss: xx - ss * eps_field, x, s, s_next,
                                                    refine_iterations=2)
        z = literal_eq2(z, t, t_next, eps_field)
        torch.testing.assert_close(x_new * math.sqrt(alpha(t_next)), z, rtol=1e-10, atol=1e-10)
        assert calls == 3 and residual < 1e-12  # eps independent of x: the first guess is the fixed point
        x = x_new


def eps_input_scale(sigma):
    """ComfyUI's EPS calculate_input factor."""
    return 1 / math.sqrt(1 + sigma ** 2)


@pytest.mark.parametrize("t, t_next", [(None, 99), (299, 399), (899, 999)])
def test_first_guess_is_diffusers_ddim_inversion_eq2_with_eps_of_z_t_at_t_next(t, t_next):
    """With the model's input scale the unrefined step is Eq. 2 with eps(z_t, t+1), the DDIM inversion of
    diffusers' DDIMInverseScheduler (and Tune-A-Video's, null-text inversion's) loops."""
    net = EpsNet((1, 4, 6, 6))
    t_of_sigma = {sigma_of(tt): tt for tt in TIMESTEPS[1:]}
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    z_t = x * math.sqrt(alpha(t))
    x_new, residual, calls = inv.inversion_step(comfy_denoise(net, t_of_sigma), x, sigma_of(t), sigma_of(t_next), 0,
                                                input_scale=eps_input_scale)
    expected = literal_eq2(z_t, t, t_next, net(z_t, t_next))
    torch.testing.assert_close(x_new * math.sqrt(alpha(t_next)), expected, rtol=1e-10, atol=1e-10)
    assert calls == 1 and math.isnan(residual)
    # without it the model sees x at the target level: eps(sqrt(a_{t+1}) x_t, t+1) (flow models' case)
    plain, _, _ = inv.inversion_step(comfy_denoise(net, t_of_sigma), x, sigma_of(t), sigma_of(t_next), 0)
    expected = literal_eq2(z_t, t, t_next, net(x * math.sqrt(alpha(t_next)), t_next))
    torch.testing.assert_close(plain * math.sqrt(alpha(t_next)), expected, rtol=1e-10, atol=1e-10)


def test_residual_can_be_measured_without_refinement():
    net = EpsNet((1, 4, 6, 6))
    t_of_sigma = {sigma_of(t): t for t in TIMESTEPS[1:]}
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    t, t_next = 299, 399
    _, measured, calls = inv.inversion_step(comfy_denoise(net, t_of_sigma), x, sigma_of(t), sigma_of(t_next), 0,
                                            measure_residual=True)
    assert calls == 2 and measured > 0


def test_refined_inversion_is_undone_by_the_literal_ddim_sampling_step():
    """After refinement every inverted latent goes back to the previous one under Eq. 1 (alpha form)."""
    net = EpsNet((2, 4, 6, 6), seed=5)
    t_of_sigma = {sigma_of(t): t for t in TIMESTEPS[1:]}
    z0 = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    sampling_sigmas = [sigma_of(t) for t in reversed(TIMESTEPS[1:])] + [0.0]
    seen = []
    result = inv.invert(comfy_denoise(net, t_of_sigma), z0, sampling_sigmas, refine_iterations=30,
                        on_step=lambda done, total: seen.append((done, total)), input_scale=eps_input_scale)
    assert seen == [(i, 10) for i in range(11)]
    assert [round(s.sigma_to, 6) for s in result.steps] == [round(sigma_of(t), 6) for t in TIMESTEPS[1:]]
    assert result.max_residual < 1e-9 and result.model_calls == 10 * 31
    # replay the path: recompute each step's latent and check Eq. 1 maps it back
    x, path = z0, [None] + TIMESTEPS[1:]
    for t, t_next in zip(path, path[1:]):
        x_next, _, _ = inv.inversion_step(comfy_denoise(net, t_of_sigma), x, sigma_of(t), sigma_of(t_next), 30)
        z_next = x_next * math.sqrt(alpha(t_next))
        back = literal_eq1(z_next, t_next, t, net(z_next, t_next))
        torch.testing.assert_close(back, x * math.sqrt(alpha(t)), rtol=1e-8, atol=1e-8)
        x = x_next
    torch.testing.assert_close(x, result.latent)


def test_refinement_lowers_the_reconstruction_error():
    net = EpsNet((1, 4, 6, 6), seed=2)
    t_of_sigma = {sigma_of(t): t for t in TIMESTEPS[1:]}
    denoise = comfy_denoise(net, t_of_sigma)
    z0 = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    sampling = [sigma_of(t) for t in reversed(TIMESTEPS[1:])] + [0.0]
    errors = []
    for k in (0, 1, 3):
        x = inv.invert(denoise, z0, sampling, refine_iterations=k).latent
        for s, s_next in zip(sampling, sampling[1:]):  # ComfyUI's euler, the sampler the noise is for
            x = x + (s_next - s) * (x - denoise(x, s)) / s
        errors.append(inv.relative_error(x, z0))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-2 * errors[0]


def test_inversion_input_checks_and_non_finite_latents():
    x = torch.randn(1, 4, 4, 4)
    before = x.clone()
    assert inv.inversion_sigmas([2.0, 1.0, 0.5]) == [0.5, 1.0, 2.0]  # a schedule ending above 0 starts there
    assert [s.sigma_from for s in inv.invert(lambda a, s: 0.5 * a, x, [2.0, 1.0, 0.5]).steps] == [0.5, 1.0]
    with pytest.raises(inv.InversionError, match="not strictly decreasing"):
        inv.invert(lambda a, s: a, x, [0.0, 1.0, 2.0, 0.0])
    with pytest.raises(inv.InversionError, match="at least 2"):
        inv.invert(lambda a, s: a, x, [0.0])
    with pytest.raises(inv.InversionError, match="refine_iterations"):
        inv.invert(lambda a, s: a, x, [1.0, 0.0], refine_iterations=-1)
    with pytest.raises(inv.InversionError, match=r"NaN/inf at step 2 of 3"):
        inv.invert(lambda a, s: a * float("nan") if s > 1.5 else a * 0.5, x, [3.0, 2.0, 1.0, 0.0])
    with pytest.raises(inv.InversionError, match="positive"):
        inv.to_unit_noise(x, 0.0)
    assert torch.equal(x, before)


def test_unrefined_inversion_equals_diffusers_ddim_inverse_scheduler():
    """refine_iterations 0 on an eps model is diffusers' DDIM inversion (the paper's backbones' code)."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMInverseScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                               set_alpha_to_one=True, clip_sample=False)
    scheduler.set_timesteps(10)
    alphas = scheduler.alphas_cumprod.double()
    torch.testing.assert_close(alphas, ALPHAS, rtol=0, atol=1e-6)  # ComfyUI "linear" = diffusers "scaled_linear"
    net = EpsNet((2, 4, 6, 6), seed=9)
    z0 = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    z = z0.clone()
    for t in scheduler.timesteps:
        z = scheduler.step(net(z, int(t)), int(t), z).prev_sample
    sigma = {int(t): math.sqrt((1 - float(alphas[t])) / float(alphas[t])) for t in scheduler.timesteps}
    t_of_sigma = {s: t for t, s in sigma.items()}
    sampling = [sigma[int(t)] for t in reversed(scheduler.timesteps)] + [0.0]
    x = inv.invert(comfy_denoise(net, t_of_sigma), z0, sampling, input_scale=eps_input_scale).latent
    z_ours = x * math.sqrt(float(alphas[int(scheduler.timesteps[-1])]))
    # diffusers keeps its alphas in float32: agreement to ~1e-7 (the other first guess is off by ~0.3)
    torch.testing.assert_close(z_ours, z, rtol=1e-5, atol=1e-6)


class FakeEvent:
    """A CUDA event's three methods; ready after ``ready_after`` queries."""

    def __init__(self, ready_after: int):
        self.queries, self.ready_after, self.waited = 0, ready_after, False

    def record(self):
        pass

    def query(self) -> bool:
        self.queries += 1
        return self.queries > self.ready_after

    def synchronize(self):
        self.waited = True


def test_finite_watch_reads_only_flags_that_are_ready_unless_told_to_wait():
    events = []
    watch = inv.FiniteWatch(every=3, make_event=lambda: events.append(FakeEvent(2)) or events[-1])
    good, bad = torch.ones(2, 2), torch.tensor([1.0, float("inf")])
    for x in (good, good, bad, good):  # steps 0..3; the first three are flushed as one batch
        watch.add(x)
    assert len(events) == 1 and watch.fresh and watch.first_fresh == 3
    assert watch.first_bad() is None and watch.first_bad() is None  # the copy is not done: no wait, no answer
    assert watch.first_bad() == 2 and not events[0].waited  # ready now
    watch.add(torch.tensor(float("nan")))  # step 4 (not flushed: 2 fresh of 3)
    assert watch.first_bad() is None  # nothing pending
    assert watch.first_bad(wait=True) == 4 and events[-1].waited  # the end flushes and waits
    cpu = inv.FiniteWatch(every=2)
    cpu.add(good)
    cpu.add(bad)
    assert cpu.first_bad() == 1  # CPU tensors: read at once


def test_non_finite_inversion_stops_within_a_batch_of_flags_and_names_the_step():
    calls = []

    def denoise(a, s):
        calls.append(s)
        return a * float("nan") if len(calls) == 3 else a * 0.5

    sigmas = [float(s) for s in torch.linspace(20, 0, 41)]
    with pytest.raises(inv.InversionError, match=r"NaN/inf at step 3 of 40"):
        inv.invert(denoise, torch.randn(1, 4, 4, 4), sigmas)
    assert len(calls) == inv.FINITE_CHECK_EVERY  # noticed when its batch of flags is read, not at the end
    calls.clear()
    with pytest.raises(inv.InversionError, match=r"NaN/inf at step 2 of 40"):  # 2 calls a step; read every step
        inv.invert(denoise, torch.randn(1, 4, 4, 4), sigmas, refine_iterations=1)
    assert len(calls) == 4


def test_to_device_without_wait_leaves_cpu_bound_tensors_as_they_are():
    from comfyui_searchpriors.distill.device_copy import to_device_without_wait

    x = torch.randn(3, 4)[:, ::2]  # not contiguous
    assert to_device_without_wait(x, "cpu") is x and to_device_without_wait(x, torch.device("cpu")) is x
