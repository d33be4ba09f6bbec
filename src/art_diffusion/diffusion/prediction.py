"""What a denoiser predicts, and how its loss is weighted: the one place the prediction type (eps, v or x0) meets the
schedule. Training asks :func:`target` for what the net should output and :func:`min_snr_weights` for each sample's
weight; every sampler and grid converts the net's output back through :func:`x0_and_eps` (:func:`eps_predictor`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from art_diffusion.diffusion.schedule import NoiseSchedule, per_sample

#: What the denoiser outputs: the noise eps (Ho et al.), v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022)
#: or the clean image x0 itself (a = alpha_bar_t).
PREDICTIONS = ("eps", "v", "x0")


UNKNOWN = "prediction must be one of {}, got {!r}."


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(UNKNOWN.format(PREDICTIONS, prediction))


def target(schedule: NoiseSchedule, prediction: str, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """What a denoiser of this ``prediction`` type should output for x_t = q_sample(x0, t, noise)."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "v":
        a = per_sample(schedule.alpha_bar[t], x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0
    raise ValueError(UNKNOWN.format(PREDICTIONS, prediction))


def x0_and_eps(schedule: NoiseSchedule, prediction: str, x_t: Tensor, t: Tensor,
               output: Tensor) -> tuple[Tensor, Tensor]:
    """The one conversion of a denoiser's ``output`` (of type ``prediction``) to the clean image and noise."""
    if prediction == "eps":
        return schedule.predict_x0(x_t, t, output), output
    a = per_sample(schedule.alpha_bar[t], x_t)
    if prediction == "x0":
        return output, (x_t - a.sqrt() * output) / (1 - a).sqrt()
    if prediction == "v":
        return a.sqrt() * x_t - (1 - a).sqrt() * output, (1 - a).sqrt() * x_t + a.sqrt() * output
    raise ValueError(UNKNOWN.format(PREDICTIONS, prediction))


def eps_predictor(net: nn.Module, schedule: NoiseSchedule,
                  prediction: str) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    """``net`` as a noise predictor ``(x_t, t, y) -> eps``, whatever it outputs (what samplers and guidance take)."""
    check_prediction(prediction)
    return lambda x, t, y: x0_and_eps(schedule, prediction, x, t, net(x, t, y))[1]


def min_snr_weights(snr: Tensor, gamma: float, prediction: str) -> Tensor:
    """Min-SNR-γ (Hang et al. 2023): weight each timestep's loss so it equals min(SNR, γ) times the x0 MSE.

    The MSE of an eps output is the x0 MSE divided by SNR, that of a v output divided by SNR + 1.
    """
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "v":
        return clipped / (snr + 1)
    if prediction == "x0":
        return clipped
    raise ValueError(UNKNOWN.format(PREDICTIONS, prediction))
