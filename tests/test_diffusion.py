"""The diffusion module: the schedule, the noising, the loss, guidance and DDIM, the two networks."""

import math

import pytest
import torch

from mmlib import diffusion


class Spy(torch.nn.Module):
    """A stand-in network that records what it was given and answers with a chosen function."""

    def __init__(self, answer):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))  # so it has a device
        self.answer, self.calls = answer, []

    def forward(self, x, t, cond):
        self.calls.append((x.clone(), t.clone(), cond.clone()))
        return self.answer(x, t, cond)


def test_the_cosine_schedule_falls_from_signal_to_noise_as_its_formula_says():
    ab = diffusion.cosine_schedule(1000)
    assert ab.shape == (1000,) and torch.all(ab[1:] < ab[:-1])
    assert ab[0] > 0.999 and ab[-1] < 1e-4
    f = [math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 for t in (0, 1, 500)]
    assert ab[499].item() == pytest.approx(f[2] / f[0], rel=1e-4)  # no beta clipped that early
    with pytest.raises(ValueError, match="steps >= 2"):
        diffusion.cosine_schedule(1)


def test_noising_keeps_unit_variance_and_mixes_by_alpha_bar():
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(20000, 4, generator=gen), torch.randn(20000, 4, generator=gen)
    a = torch.full((20000,), 0.3)
    x_t = diffusion.add_noise(x0, noise, a)
    assert x_t.var().item() == pytest.approx(1.0, abs=0.03)
    assert torch.allclose(x_t, math.sqrt(0.3) * x0 + math.sqrt(0.7) * noise)


@pytest.mark.parametrize("predict", ["eps", "x0", "v"])
def test_the_loss_compares_the_prediction_with_its_target(predict):
    ab = diffusion.cosine_schedule(100)
    x0, cond = torch.randn(16, 3), torch.zeros(16, 2)
    gen = torch.Generator().manual_seed(5)  # the same draws, in the same order, as the loss
    t = torch.randint(100, (16,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    a = ab[t][:, None]
    target = {"eps": noise, "x0": x0, "v": a.sqrt() * noise - (1 - a).sqrt() * x0}[predict]
    zeros = Spy(lambda x, t, c: torch.zeros_like(x))
    loss = diffusion.diffusion_loss(
        zeros, x0, cond, ab, torch.Generator().manual_seed(5), 0.0, predict
    )
    assert loss.item() == pytest.approx(target.pow(2).mean().item(), rel=1e-5)


def test_the_loss_is_reproducible_from_its_generator_and_drops_the_condition_when_asked():
    ab = diffusion.cosine_schedule(100)
    spy = Spy(lambda x, t, c: x * 0)
    x0, cond = torch.randn(8, 3), torch.ones(8, 5)
    losses = [
        diffusion.diffusion_loss(spy, x0, cond, ab, torch.Generator().manual_seed(3), 0.0)
        for _ in range(2)
    ]
    assert losses[0] == losses[1]
    assert torch.equal(spy.calls[0][2], cond)  # p_uncond 0: every condition kept
    diffusion.diffusion_loss(spy, x0, cond, ab, torch.Generator().manual_seed(3), 1.0)
    assert torch.equal(spy.calls[-1][2], torch.zeros(8, 5))  # p_uncond 1: every one dropped
    # predicting x0 with a network that answers zeros costs the mean square of x0
    loss = diffusion.diffusion_loss(spy, x0, cond, ab, torch.Generator(), 0.0, predict="x0")
    assert loss.item() == pytest.approx(x0.pow(2).mean().item())
    with pytest.raises(ValueError, match="predict"):
        diffusion.diffusion_loss(spy, x0, cond, ab, torch.Generator(), predict="noise")


def test_guidance_extrapolates_from_the_unconditional_output_and_one_means_none():
    spy = Spy(lambda x, t, c: x + c.sum(-1, keepdim=True))  # conditional = x + 2, unconditional = x
    x, t, cond = torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), torch.ones(3, 2)
    assert torch.equal(diffusion.guided(spy, x, t, cond, 1.0), torch.full((3, 1), 2.0))
    assert len(spy.calls) == 1  # unguided: one call
    assert torch.equal(diffusion.guided(spy, x, t, cond, 0.0), torch.zeros(3, 1))
    assert torch.equal(diffusion.guided(spy, x, t, cond, 3.0), torch.full((3, 1), 6.0))


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), "three"])
def test_a_guidance_scale_below_zero_or_not_finite_is_refused_in_one_line(bad):
    with pytest.raises(ValueError, match="guidance must be a finite number >= 0"):
        diffusion.check_guidance(bad)


def test_ddim_visits_the_asked_number_of_steps_from_noisiest_to_clean():
    assert diffusion.ddim_steps(1000, 4) == [999, 666, 333, 0]
    for bad in (0, 1001, 2.5, float("nan")):
        with pytest.raises(ValueError, match="steps must be between 1 and 1000"):
            diffusion.ddim_steps(1000, bad)


def test_one_ddim_step_with_the_true_noise_lands_on_the_clean_input():
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    a = 0.4
    x_t = diffusion.add_noise(x0, noise, torch.full((5,), a))
    assert torch.allclose(diffusion.ddim_step(noise, x_t, a, 1.0, "eps"), x0, atol=1e-5)
    assert torch.allclose(diffusion.ddim_step(x0, x_t, a, 1.0, "x0"), x0, atol=1e-5)
    v = math.sqrt(a) * noise - math.sqrt(1 - a) * x0
    assert torch.allclose(diffusion.ddim_step(v, x_t, a, 1.0, "v"), x0, atol=1e-5)
    halfway = diffusion.ddim_step(noise, x_t, a, 0.9, "eps")  # same noise, less of it
    assert torch.allclose(halfway, math.sqrt(0.9) * x0 + math.sqrt(0.1) * noise, atol=1e-5)


@pytest.mark.parametrize("predict", ["eps", "x0", "v"])
def test_ddim_with_an_exact_denoiser_walks_from_any_noise_to_the_one_clean_point(predict):
    # a world of one point mu: the exact eps, x0 and v of any x_t follow from x_t alone
    mu = torch.tensor([0.5, -1.0, 2.0])
    ab = diffusion.cosine_schedule(200)

    def exact(x, t, c):
        a = ab[t][:, None]
        eps = (x - a.sqrt() * mu) / (1 - a).sqrt()
        return {"eps": eps, "x0": mu.expand_as(x), "v": a.sqrt() * eps - (1 - a).sqrt() * mu}[
            predict
        ]

    net = Spy(exact)
    for clip_x0 in (None, 3.0):
        out = diffusion.ddim_sample(net, torch.zeros(4, 1), (3,), ab, 20, 1.0, predict, clip_x0)
        assert torch.allclose(out, mu.expand(4, 3), atol=1e-3), (predict, clip_x0)


def test_ddim_samples_repeat_with_their_seed_and_differ_with_another():
    net = Spy(lambda x, t, c: 0.5 * x)  # depends on x: the start noise matters
    ab = diffusion.cosine_schedule(100)
    cond = torch.zeros(3, 1)
    one, again, other = (
        diffusion.ddim_sample(net, cond, (2,), ab, 10, predict="eps", clip_x0=3.0, seed=s)
        for s in (1, 1, 2)
    )
    assert torch.equal(one, again) and not torch.allclose(one, other)


def test_sampling_with_a_network_that_knows_the_answer_returns_it_and_seeds_repeat():
    target = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    spy = Spy(lambda x, t, c: c)  # predicts x0 = its condition
    ab = diffusion.cosine_schedule(100)
    out = diffusion.ddim_sample(spy, target, (2,), ab, steps=10, predict="x0", seed=1)
    assert torch.allclose(out, target, atol=1e-5)
    again = diffusion.ddim_sample(spy, target + 1, (2,), ab, steps=10, predict="x0", seed=1)
    assert torch.allclose(again, target + 1, atol=1e-5)
    out, frames = diffusion.ddim_sample(spy, target, (2,), ab, steps=10, predict="x0", every=5)
    assert len(frames) == 2 and torch.allclose(frames[-1], target, atol=1e-5)


def test_the_unet_keeps_the_latent_shape_starts_at_zero_and_refuses_a_wrong_embedding():
    net = diffusion.UNet(diffusion.UNetConfig(channels=8, width=16, cond_dim=6, heads=2))
    x, t = torch.randn(2, 8, 8, 8), torch.tensor([0, 999])
    out = net(x, t, torch.randn(2, 6))
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(out))  # zero-initialised
    with pytest.raises(ValueError, match=r"condition must be \(B, 6\)"):
        net(x, t, torch.randn(2, 5))
    prior = diffusion.VectorDenoiser(diffusion.DenoiserConfig(dim=4, width=8, depth=1))
    assert prior(torch.randn(2, 4), t, torch.randn(2, 4)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"condition must be \(B, 4\)"):
        prior(torch.randn(2, 4), t, torch.randn(2, 3))


def test_a_small_conditional_diffusion_model_learns_where_each_condition_points():
    # two conditions, two clean points: after training, DDIM from noise lands near the right one
    torch.manual_seed(0)
    net = diffusion.VectorDenoiser(diffusion.DenoiserConfig(dim=2, width=64, depth=2))
    ab = diffusion.cosine_schedule(100)
    points = torch.tensor([[1.5, 1.5], [-1.5, 0.5]])
    conds = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(600):
        rows = torch.randint(2, (64,), generator=gen)
        loss = diffusion.diffusion_loss(net, points[rows], conds[rows], ab, gen, 0.1, "x0")
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    out = diffusion.ddim_sample(net, conds.repeat(8, 1), (2,), ab, steps=20, predict="x0")
    assert (out - points.repeat(8, 1)).norm(dim=-1).max() < 0.3
