"""Noise schedules and the closed-form forward process q(x_t | x_0)."""

import pytest
import torch

from art_diffusion.diffusion.schedule import NoiseSchedule


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alpha_bar_falls_strictly_from_clean_to_pure_noise(kind):
    schedule = NoiseSchedule(kind, timesteps=1000)
    alpha_bar = schedule.alpha_bar.double()
    assert (alpha_bar[1:] < alpha_bar[:-1]).all()
    assert alpha_bar[0] > 0.999 and alpha_bar[-1] < 1e-3 and alpha_bar[-1] > 0
    assert ((schedule.betas > 0) & (schedule.betas < 1)).all()
    assert (schedule.posterior_variance[1:] > 0).all() and schedule.posterior_variance[0] == 0


def test_linear_schedule_is_ho_et_al_and_rescales_with_timesteps():
    betas = NoiseSchedule("linear", 1000).betas
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    # fewer steps keep the same end point: alpha_bar_T stays ~0
    assert NoiseSchedule("linear", 100).alpha_bar[-1] < 1e-3


def test_cosine_alpha_bar_follows_its_closed_form():
    schedule = NoiseSchedule("cosine", 1000)
    s = 0.008
    f = lambda t: torch.cos(torch.tensor((t / 1000 + s) / (1 + s) * torch.pi / 2, dtype=torch.float64)) ** 2  # noqa: E731
    for t in (0, 250, 500, 750):
        assert schedule.alpha_bar[t].item() == pytest.approx((f(t + 1) / f(0)).item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("step", [0, 100, 500, 999])
def test_q_sample_has_the_closed_form_mean_and_variance(kind, step):
    schedule = NoiseSchedule(kind, 1000)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, 4, 4, generator=gen) * 2 - 1
    n = 20_000
    t = torch.full((n,), step)
    x_t = schedule.q_sample(x0.expand(n, -1, -1, -1), t, torch.randn(n, 3, 4, 4, generator=gen))
    a = schedule.alpha_bar[step]
    # 20k samples: the standard error of the mean is sqrt((1 - a) / n) <= 0.007, of the variance ~0.01 * (1 - a)
    torch.testing.assert_close(x_t.mean(0), (a.sqrt() * x0)[0], atol=0.03, rtol=0)
    torch.testing.assert_close(x_t.var(0), torch.full_like(x0[0], float(1 - a)), atol=0.06 * float(1 - a) + 1e-6,
                               rtol=0)


def test_predict_x0_inverts_q_sample():
    schedule = NoiseSchedule("linear", 1000)
    x0, noise = torch.rand(4, 3, 8, 8) * 2 - 1, torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 10, 500, 900])
    torch.testing.assert_close(schedule.predict_x0(schedule.q_sample(x0, t, noise), t, noise), x0, atol=1e-4,
                               rtol=0)


def test_an_unknown_schedule_is_a_plain_value_error_that_names_no_config_key():
    # the class knows nothing of the config layout; the key's rule (and its message) is in run/validate.py
    with pytest.raises(ValueError, match="kind must be one of") as info:
        NoiseSchedule("quadratic", 1000)
    assert type(info.value) is ValueError and "model." not in str(info.value)
