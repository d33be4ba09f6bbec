"""Reverse processes: DDPM's ancestral chain (Ho et al. 2020), DDIM's shortcut (Song et al. 2021) and
DPM-Solver++(2M) (Lu et al. 2022), a second-order multistep ODE solver (BENCHMARKS.md, "Samplers").

All take ``eps_fn(x_t, t) -> eps`` (any denoiser, guided or not) and draw all their noise from ``generator``,
on the CPU, so a seed gives the same images on any device. :func:`sample` is the one entry point that picks a
sampler by name (``DiffusionModule.sample`` calls it, and through it the tools, callbacks and benchmarks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from art_diffusion.diffusion.schedule import NoiseSchedule, per_sample

EpsFn = Callable[[Tensor, Tensor], Tensor]
SAMPLERS = ("ddim", "dpm++2m", "ddpm")


def _randn(shape, generator: torch.Generator | None, like_device) -> Tensor:
    return torch.randn(shape, generator=generator).to(like_device)


def _progress(steps: Iterable, show: bool, desc: str) -> Iterable:
    if not show:
        return steps
    from tqdm.auto import tqdm

    return tqdm(steps, desc=desc, leave=False)


def _x0_and_eps(schedule: NoiseSchedule, eps_fn: EpsFn, x: Tensor, t: Tensor, clip: bool) -> tuple[Tensor, Tensor]:
    eps = eps_fn(x, t)
    x0 = schedule.predict_x0(x, t, eps)
    if clip:  # data lives in [-1, 1]; re-derive eps so x0 and eps stay consistent with x_t
        x0 = x0.clamp(-1, 1)
        a = per_sample(schedule.alpha_bar[t], x)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
    return x0, eps


@torch.no_grad()
def ddpm_sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    device,
    generator: torch.Generator | None = None,
    clip: bool = True,
    progress: bool = False,
) -> Tensor:
    """All T ancestral steps x_t -> x_{t-1} ~ q(x_{t-1} | x_t, x0_hat), with the posterior variance beta~_t."""
    x = _randn(shape, generator, device)
    for step in _progress(range(schedule.timesteps - 1, -1, -1), progress, "ddpm"):
        t = torch.full((shape[0],), step, device=device, dtype=torch.long)
        x0, _ = _x0_and_eps(schedule, eps_fn, x, t, clip)
        a_bar, a_bar_prev, beta = schedule.alpha_bar[step], schedule.alpha_bar_prev[step], schedule.betas[step]
        # posterior mean (Ho et al. eq. 7) as a blend of the predicted x0 and the current x_t
        mean = (a_bar_prev.sqrt() * beta / (1 - a_bar)) * x0 + ((1 - beta).sqrt() * (1 - a_bar_prev) / (1 - a_bar)) * x
        x = mean
        if step > 0:  # the last step returns the mean: adding noise to the final image would only blur it
            x = x + schedule.posterior_variance[step].sqrt() * _randn(shape, generator, device)
    return x


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` evenly spaced timesteps from T - 1 down to 0 (both ends included)."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"DDIM needs 1 <= steps <= the schedule's timesteps ({timesteps}), got steps={steps}.")
    return torch.linspace(timesteps - 1, 0, steps).round().long().unique_consecutive().tolist()


@torch.no_grad()
def ddim_sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    device,
    steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    clip: bool = True,
    progress: bool = False,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12): eta = 0 is deterministic given x_T, eta = 1 matches DDPM's variance."""
    x = _randn(shape, generator, device)
    ts = ddim_timesteps(schedule.timesteps, steps)
    for i, step in enumerate(_progress(ts, progress, "ddim")):
        t = torch.full((shape[0],), step, device=device, dtype=torch.long)
        x0, eps = _x0_and_eps(schedule, eps_fn, x, t, clip)
        a_bar = schedule.alpha_bar[step]
        a_prev = schedule.alpha_bar[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(a_bar)
        sigma = eta * ((1 - a_prev) / (1 - a_bar) * (1 - a_bar / a_prev)).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0 and i + 1 < len(ts):
            x = x + sigma * _randn(shape, generator, device)
    return x


#: How dpm++2m places its steps: evenly in t (as diffusers' DPMSolverMultistepScheduler) or evenly in log-SNR
#: (Lu et al.'s choice: nearer the ODE's exact solution, but on the trained ddpm_cpu32 model further from the real
#: images' statistics; BENCHMARKS.md, "Samplers").
SPACINGS = ("time", "logsnr")


def solver_timesteps(schedule: NoiseSchedule, steps: int, spacing: str = "time") -> list[int]:
    """The model calls' timesteps, from T - 1 down: the first ``steps`` points of a grid of ``steps + 1`` from T - 1 to
    0, evenly spaced in t or in log-SNR and rounded (fewer when rounding merges some). The grid's last interval
    is not stepped: the last call's x0 is the result (diffusers' ``final_sigmas_type="zero"``)."""
    if not 1 <= steps <= schedule.timesteps:
        raise ValueError(f"dpm++2m needs 1 <= steps <= the schedule's timesteps ({schedule.timesteps}), "
                         f"got steps={steps}.")
    last = schedule.timesteps - 1
    if spacing == "time":
        grid = torch.linspace(last, 0, steps + 1, dtype=torch.float64).round().long()
    elif spacing == "logsnr":
        lam = _half_logsnr(schedule.alpha_bar.double())  # decreasing in t
        wanted = torch.linspace(float(lam[-1]), float(lam[0]), steps + 1, dtype=torch.float64)
        grid = torch.searchsorted(-lam, -wanted).clamp(max=last)  # the first t with lam[t] <= wanted
    else:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}.")
    return grid[:-1].unique_consecutive().tolist()


def _half_logsnr(alpha_bar: Tensor) -> Tensor:
    """lambda = log(alpha / sigma), half the log-SNR."""
    return 0.5 * (alpha_bar.log() - (1 - alpha_bar).log())


@torch.no_grad()
def dpm_solver_2m_sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    device,
    steps: int = 20,
    generator: torch.Generator | None = None,
    clip: bool = True,
    progress: bool = False,
    spacing: str = "time",
) -> Tensor:
    """DPM-Solver++(2M), Lu et al. 2022 (Alg. 2): deterministic, data prediction, multistep second order.

    ``steps`` model calls at the timesteps of :func:`solver_timesteps`; the last call's x0 is the result. Without
    ``clip`` it gives diffusers' DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2).
    """
    x = _randn(shape, generator, device)
    ts = solver_timesteps(schedule, steps, spacing)
    alpha_bar = schedule.alpha_bar.double()
    lam = _half_logsnr(alpha_bar)
    previous_x0, previous_h = None, None
    for i, step in enumerate(_progress(ts, progress, "dpm++2m")):
        t = torch.full((shape[0],), step, device=device, dtype=torch.long)
        x0, _ = _x0_and_eps(schedule, eps_fn, x, t, clip)
        if i + 1 == len(ts):
            return x0
        nxt = ts[i + 1]
        h = float(lam[nxt] - lam[step])
        d = x0
        if previous_x0 is not None:  # second order: extrapolate x0 linearly in lambda from the last two calls
            r = previous_h / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
        sigma_ratio = float(((1 - alpha_bar[nxt]) / (1 - alpha_bar[step])).sqrt())
        x = sigma_ratio * x - float(alpha_bar[nxt].sqrt() * math.expm1(-h)) * d
        previous_x0, previous_h = x0, h
    return x


def sample(eps_fn: EpsFn, schedule: NoiseSchedule, shape: tuple[int, ...], device, sampler: str = "ddim",
           steps: int = 50, eta: float = 0.0, generator: torch.Generator | None = None, progress: bool = False,
           spacing: str = "time") -> Tensor:
    """Images of ``shape`` in model space ([-1, 1]) from pure noise, by ``sampler``: ``ddim`` (``steps``, ``eta``),
    ``dpm++2m`` (``steps``, ``spacing``) or ``ddpm`` (every timestep; ``steps`` ignored)."""
    if sampler == "ddpm":
        return ddpm_sample(eps_fn, schedule, shape, device, generator, progress=progress)
    if sampler == "dpm++2m":
        return dpm_solver_2m_sample(eps_fn, schedule, shape, device, steps, generator, progress=progress,
                                    spacing=spacing)
    if sampler == "ddim":
        return ddim_sample(eps_fn, schedule, shape, device, steps, eta, generator, progress=progress)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")


def guided(eps_fn: Callable[[Tensor, Tensor, Tensor | None], Tensor], labels: Tensor | None,
           null_label: int | None, guidance_scale: float) -> EpsFn:
    """Classifier-free guidance: eps_uncond + w (eps_cond - eps_uncond), both in one batched call.

    ``labels=None`` samples unconditionally; ``guidance_scale=1`` is plain conditional sampling (one call).
    """
    if labels is None:
        return lambda x, t: eps_fn(x, t, None)
    if guidance_scale == 1.0:
        return lambda x, t: eps_fn(x, t, labels)

    def eps_guided(x: Tensor, t: Tensor) -> Tensor:
        both = eps_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, torch.full_like(labels, null_label)]))
        cond, uncond = both.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    return eps_guided
