"""Samplers: DDIM determinism, classifier-free guidance, and a tiny denoiser that regenerates its one image."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from art_diffusion.data.demo import render_demo_image
from art_diffusion.diffusion import NoiseSchedule
from art_diffusion.diffusion.ema import EMA
from art_diffusion.diffusion.samplers import ddim_sample, ddim_timesteps, ddpm_sample, guided
from art_diffusion.nets import ConvDenoiser

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny convolutions: see conftest


def _random_denoiser(num_classes=None) -> ConvDenoiser:
    torch.manual_seed(0)
    net = ConvDenoiser(base_channels=4, emb_dim=16, num_classes=num_classes).eval()
    torch.nn.init.normal_(net.head.weight, std=0.1)  # a zero head would predict eps = 0 and hide everything
    return net


def psnr(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per image, for [-1, 1] data (peak-to-peak 2)."""
    return 10 * torch.log10(4 / (images - target).square().mean(dim=(1, 2, 3)))


def test_ddim_timesteps_run_from_last_to_first():
    assert ddim_timesteps(1000, 5) == [999, 749, 500, 250, 0]
    assert ddim_timesteps(10, 10) == list(range(9, -1, -1))
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(10, 11)


def test_ddim_with_eta_zero_is_deterministic_for_a_seed():
    net, schedule = _random_denoiser(), NoiseSchedule("linear", 50)

    def run(seed, eta=0.0):
        return ddim_sample(net, schedule, (2, 3, 16, 16), "cpu", steps=10, eta=eta,
                           generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1))
    # eta > 0 draws fresh noise every step: seeded it repeats, but it is a different path than eta = 0
    assert torch.equal(run(0, eta=1.0), run(0, eta=1.0))
    assert not torch.allclose(run(0, eta=1.0), run(0))


def test_samplers_reach_the_image_an_oracle_denoiser_knows():
    """With the true eps of one known x0, both reverse processes must end exactly at x0."""
    schedule = NoiseSchedule("cosine", 100)
    x0 = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def oracle(x, t):
        a = schedule.alpha_bar[t].view(-1, 1, 1, 1)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    gen = torch.Generator().manual_seed(0)
    for sample in (ddim_sample(oracle, schedule, (2, 3, 8, 8), "cpu", steps=10, generator=gen),
                   ddpm_sample(oracle, schedule, (2, 3, 8, 8), "cpu", generator=gen)):
        torch.testing.assert_close(sample, x0.expand(2, -1, -1, -1), atol=1e-3, rtol=0)


def test_classifier_free_guidance_extrapolates_from_unconditional_to_conditional():
    net = _random_denoiser(num_classes=3)
    x, t, labels = torch.randn(2, 3, 8, 8), torch.tensor([5, 7]), torch.tensor([0, 2])
    cond, uncond = net(x, t, labels), net(x, t, torch.full_like(labels, 3))
    torch.testing.assert_close(guided(net, labels, 3, 2.5)(x, t), uncond + 2.5 * (cond - uncond), atol=1e-5, rtol=0)
    torch.testing.assert_close(guided(net, labels, 3, 1.0)(x, t), cond)
    torch.testing.assert_close(guided(net, None, 3, 2.5)(x, t), uncond)  # no labels: the "no class" model
    assert not torch.allclose(cond, uncond)


def test_ema_warms_up_then_tracks_with_its_decay():
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = EMA(net, decay=0.9)
    net.weight.data.fill_(1.0)
    ema.update(net)  # first update: decay min(0.9, 1/10) = 0.1
    assert ema.average.weight.item() == pytest.approx(0.9)
    for _ in range(50):
        ema.update(net)
    assert ema.average.weight.item() == pytest.approx(1.0, abs=1e-2)
    assert not ema.average.weight.requires_grad and "average.weight" in ema.state_dict()


@pytest.mark.slow
def test_tiny_denoiser_overfit_on_one_image_regenerates_it_from_noise():
    torch.manual_seed(0)
    image = torch.from_numpy(np.array(render_demo_image("landscapes", 0, image_size=16))).permute(2, 0, 1)
    x0 = (image.float() / 255 * 2 - 1)[None]
    schedule = NoiseSchedule("linear", timesteps=100)
    net = ConvDenoiser(base_channels=16, emb_dim=32)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(400):
        x = x0.expand(16, -1, -1, -1)
        t, noise = schedule.sample_timesteps(16, "cpu"), torch.randn_like(x)
        loss = F.mse_loss(net(schedule.q_sample(x, t, noise), t), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    net.eval()
    gen = torch.Generator().manual_seed(0)
    chance = psnr(torch.rand(64, 3, 16, 16, generator=gen) * 2 - 1, x0).mean()  # ~9 dB for uniform noise
    ddpm = psnr(ddpm_sample(net, schedule, (4, 3, 16, 16), "cpu", generator=gen), x0)
    ddim = psnr(ddim_sample(net, schedule, (4, 3, 16, 16), "cpu", steps=50, generator=gen), x0)
    assert chance < 10
    assert ddpm.min() > chance + 10, (ddpm, chance)  # ~25-30 dB: the image itself, from pure noise
    assert ddim.min() > chance + 4, (ddim, chance)   # the deterministic path is less forgiving of a tiny net
