"""The UNet, the prediction types (eps / v / x0), min-SNR weighting and DPM-Solver++(2M) on an analytic case."""

import pytest
import torch

from art_diffusion.diffusion import NoiseSchedule, ddim_sample, dpm_solver_2m_sample
from art_diffusion.diffusion.prediction import min_snr_weights, target, x0_and_eps
from art_diffusion.diffusion.samplers import solver_timesteps
from art_diffusion.losses import DiffusionLoss
from art_diffusion.nets import DiffusersUNet, UNet
from art_diffusion.nets.unet import SelfAttention

pytestmark = pytest.mark.usefixtures("one_thread")


def _unet(**kwargs) -> UNet:
    torch.manual_seed(0)
    net = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(8,), image_size=16,
               **kwargs)
    for p in net.parameters():  # the zero-initialised output layers would hide every input
        torch.nn.init.normal_(p, std=0.2) if p.dim() > 1 else None
    return net.eval()


def _assert_listens_to_time_and_class(net) -> tuple[torch.Tensor, torch.Tensor]:
    """The denoiser call both UNets share: shape kept, timestep and class heard, None = the "no class" label."""
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 10])
    out = net(x, t, torch.tensor([0, 0]))
    assert out.shape == x.shape and net.num_classes == 3
    assert not torch.allclose(out, net(x, torch.tensor([500, 500]), torch.tensor([0, 0])))  # timestep
    assert not torch.allclose(out, net(x, t, torch.tensor([1, 1])))  # class
    assert torch.allclose(net(x, t, None), net(x, t, torch.tensor([3, 3])))  # None = the "no class" label
    return x, t


def test_unet_keeps_the_shape_and_listens_to_time_class_and_every_pixel():
    net = _unet(num_classes=3)
    x, t = _assert_listens_to_time_and_class(net)
    # attention where asked (8 px) and in the middle, not at 16 px
    assert sum(isinstance(m, SelfAttention) for m in net.modules()) == 1 + 1 + 2  # down 8 px, mid, up 8 px x 2
    # self-attention gives a corner pixel's output a dependence on the opposite corner
    x2 = x.clone()
    x2[:, :, -1, -1] += 5
    assert not torch.allclose(net(x, t, None)[:, :, 0, 0], net(x2, t, None)[:, :, 0, 0])
    with pytest.raises(ValueError, match="image_size"):
        UNet(channel_mults=(1, 2, 2, 2), image_size=12)


def test_diffusers_unet_takes_the_same_call_and_sizes_as_ours():
    sizes = {"base_channels": 8, "channel_mults": (1, 2), "num_res_blocks": 1, "attention_resolutions": (8,),
             "image_size": 16}
    torch.manual_seed(0)
    net = DiffusersUNet(num_classes=3, **sizes).eval()
    _assert_listens_to_time_and_class(net)
    kinds = [type(block).__name__ for block in net.unet.down_blocks]
    assert kinds == ["DownBlock2D", "AttnDownBlock2D"]  # attention at 8 px, as asked
    ours = sum(p.numel() for p in UNet(num_classes=3, **sizes).parameters())
    assert abs(sum(p.numel() for p in net.parameters()) / ours - 1) < 0.15  # the same size, give or take


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_each_prediction_type_round_trips_to_x0_and_eps(prediction):
    schedule = NoiseSchedule("cosine", 100)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1, torch.randn(4, 3, 8, 8, generator=gen)
    t = torch.tensor([0, 10, 50, 99])
    x_t = schedule.q_sample(x0, t, noise)
    perfect = target(schedule, prediction, x0, t, noise)  # what a perfect denoiser of this type outputs
    x0_hat, eps_hat = x0_and_eps(schedule, prediction, x_t, t, perfect)
    assert torch.allclose(x0_hat, x0, atol=2e-3) and torch.allclose(eps_hat, noise, atol=2e-3)


def test_min_snr_weights_cap_the_x0_weight_at_gamma():
    snr = torch.tensor([0.1, 1.0, 5.0, 100.0])
    assert torch.allclose(min_snr_weights(snr, 5.0, "x0"), torch.tensor([0.1, 1.0, 5.0, 5.0]))
    assert torch.allclose(min_snr_weights(snr, 5.0, "eps"), torch.tensor([1.0, 1.0, 1.0, 0.05]))
    assert torch.allclose(min_snr_weights(snr, 5.0, "v"), torch.tensor([0.1 / 1.1, 0.5, 5 / 6, 5 / 101]))
    loss = DiffusionLoss(vgg_weights="random", min_snr_gamma=5.0)
    out, target = torch.ones(4, 1, 2, 2), torch.zeros(4, 1, 2, 2)  # per-sample MSE 1
    assert torch.isclose(loss(out, target, snr=snr, prediction="eps")["loss"], torch.tensor((3 + 0.05) / 4))
    assert torch.isclose(DiffusionLoss(vgg_weights="random")(out, target)["loss"], torch.tensor(1.0))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_dpm_solver_lands_near_the_exact_ode_solution_of_gaussian_data(kind):
    """Data N(mu, s^2): the exact eps is known and the probability-flow ODE maps x_T to mu + s * standardised x_T."""
    schedule, mu, s = NoiseSchedule(kind, 1000), 0.3, 0.5

    def exact_eps(x, t):
        a = schedule.alpha_bar[t].view(-1, 1, 1, 1)
        x0 = mu + a.sqrt() * s**2 / (a * s**2 + 1 - a) * (x - a.sqrt() * mu)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    shape, a_T = (16, 1, 4, 4), schedule.alpha_bar[-1]
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    truth = mu + s * (x_T - a_T.sqrt() * mu) / (a_T * s**2 + 1 - a_T).sqrt()

    def error(sampler, steps, **kwargs):
        x = sampler(exact_eps, schedule, shape, "cpu", steps=steps, generator=torch.Generator().manual_seed(0),
                    clip=False, **kwargs)
        return (x - truth).abs().max().item()

    assert error(ddim_sample, 50) < error(ddim_sample, 20)
    for spacing in ("time", "logsnr"):  # 20 second-order steps beat 50 first-order ones
        assert error(dpm_solver_2m_sample, 20, spacing=spacing) < error(ddim_sample, 50)
        ts = solver_timesteps(schedule, 20, spacing)
        assert ts[0] == 999 and ts[-1] > 0 and ts == sorted(ts, reverse=True) and len(ts) <= 20
    assert error(dpm_solver_2m_sample, 50) < 0.01  # and it converges


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_dpm_solver_matches_diffusers_dpm_solver_multistep_scheduler(kind):
    """Our DPM-Solver++(2M) (time spacing, no clipping) against diffusers' implementation, same net and noise."""
    from diffusers import DPMSolverMultistepScheduler

    schedule, shape = NoiseSchedule(kind, 1000), (4, 3, 16, 16)
    net = _unet()

    def eps_fn(x, t):  # a random net as a bounded v-predictor, so x0 stays in a data-like range
        return x0_and_eps(schedule, "v", x, t, torch.tanh(net(x, t)))[1]

    ours = dpm_solver_2m_sample(eps_fn, schedule, shape, "cpu", steps=12, generator=torch.Generator().manual_seed(0),
                                clip=False)
    theirs = DPMSolverMultistepScheduler(num_train_timesteps=1000, trained_betas=schedule.betas.double().numpy(),
                                         algorithm_type="dpmsolver++", solver_order=2)
    theirs.set_timesteps(12)
    assert theirs.timesteps.tolist() == solver_timesteps(schedule, 12)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in theirs.timesteps:
            x = theirs.step(eps_fn(x, t.repeat(shape[0])), t, x).prev_sample
    # float32 rounding, amplified by 1 / sqrt(alpha_bar) (up to 2e4 at the cosine schedule's last step), bounds the
    # agreement; a wrong coefficient or timestep would be off by far more
    assert (ours - x).abs().max() < 2e-3 and x.abs().max() > 0.5
