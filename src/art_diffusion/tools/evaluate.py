"""evaluate(cfg): score checkpoints on a folder of images or on their own test split; metrics.json and a table.

Reconstruction checkpoints: per-image means over the evaluated images, at the training resolution:
``mse`` and ``psnr`` on [0, 1] pixels, ``ssim``, ``perceptual`` (the loss's VGG16 feature MSE, with the
checkpoint's ``loss.vgg_weights`` and ``loss.vgg_layers``) and ``lpips`` (VGG variant, lower is better).
Generative checkpoints (``model=ddpm``): ``fd_vgg``, the Frechet distance in VGG16 feature space between images
they generate and real ones (not FID: see art_diffusion.metrics.fd_vgg).
"""

from __future__ import annotations

import glob
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig
from torch import Tensor, nn

from art_diffusion import DataError, UserError
from art_diffusion.checkpoints import load_module
from art_diffusion.data.images import BadImage
from art_diffusion.data.report import printable
from art_diffusion.lightning import DiffusionModule
from art_diffusion.losses import PerceptualLoss
from art_diffusion.metrics.fd_vgg import features, layer_extractor, load_images
from art_diffusion.metrics.lpips import LPIPS
from art_diffusion.metrics.pixel import mse, psnr, ssim
from art_diffusion.metrics.scores import scores
from art_diffusion.nets.vgg import ImageNetNormalize
from art_diffusion.run.run_dir import BEST_CHECKPOINT, JOB_FILE, OVERRIDES_FILE
from art_diffusion.run.validate import check_steps, check_values
from art_diffusion.storage import output_folder, read_json, write_json
from art_diffusion.tools.inputs import find_inputs, literal_prefix, resolve_device
from art_diffusion.tools.reconstruct import Reconstructor

log = logging.getLogger(__name__)

BEST = BEST_CHECKPOINT

#: Row order of the printed table, with the direction that is better.
METRICS = {"mse": "lower", "psnr": "higher", "ssim": "higher", "perceptual": "lower", "lpips": "lower",
           "fd_vgg": "lower", "kid": "lower"}


def _specs(ckpt_path) -> list[str]:
    return [str(p) for p in ckpt_path] if isinstance(ckpt_path, (list, tuple, ListConfig)) else [str(ckpt_path)]


def _expand(spec: str) -> list[str]:
    """The checkpoints one ``ckpt_path`` entry names: a file; a run dir (its best.ckpt); a sweep dir (every job's
    best.ckpt); or a glob."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / BEST).is_file():
            return [str(path / BEST)]
        return [str(p) for p in _sweep_checkpoints(spec, path)]
    if glob.has_magic(spec):
        found = sorted(glob.glob(str(path), recursive=True))
        if not found:
            raise UserError(f"ckpt_path={spec}: the glob matches no files.")
        return found
    return [spec]


def _why_no_checkpoint(job: Path) -> str:
    """Why a sweep job has no best.ckpt, from its job.json: failed (with the error), still running, or unknown."""
    try:
        record = read_json(job / JOB_FILE)
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict):
        record = {}
    if record.get("status") == "failed":
        return f"failed: {printable(str(record.get('error')))[:200]}"
    if record.get("status"):
        return f"status {printable(str(record['status']))}, but no {BEST}"
    return f"no {BEST} and no {JOB_FILE} (still running, or killed)"


def _sweep_checkpoints(spec: str, path: Path) -> list[Path]:
    """Every job's best.ckpt of a sweep dir; jobs without one are named with the reason (a warning), and a sweep
    none of whose jobs has one is one error saying so."""
    jobs = sorted(p for p in path.iterdir() if (p / JOB_FILE).is_file() or (p / OVERRIDES_FILE).is_file()
                  or (p / BEST).is_file())
    if not jobs:
        raise UserError(f"ckpt_path={spec}: neither a run dir ({BEST}) nor a sweep dir (job dirs with {BEST}).")
    found = [job / BEST for job in jobs if (job / BEST).is_file()]
    skipped = {job.name: _why_no_checkpoint(job) for job in jobs if not (job / BEST).is_file()}
    if not found:
        every = "every job failed" if all(why.startswith("failed") for why in skipped.values()) else \
            "no job has a checkpoint"
        raise UserError(f"ckpt_path={spec}: a sweep dir of {len(jobs)} job(s) where {every}, so there is nothing to "
                        f"evaluate ({'; '.join(f'{name}: {why}' for name, why in list(skipped.items())[:3])}). "
                        "Fix the error and run the sweep again; each job's error.txt has the traceback.")
    if skipped:
        log.warning("Evaluating %d of the %d jobs of the sweep %s; skipped %d without a checkpoint: %s", len(found),
                    len(jobs), spec, len(skipped), "; ".join(f"{name} ({why})" for name, why in skipped.items()))
    return found


def checkpoint_list(ckpt_path) -> list[str]:
    """Every checkpoint ``ckpt_path`` names (one entry or a list, each expanded by :func:`_expand`)."""
    return [found for spec in _specs(ckpt_path) for found in _expand(spec)]


def default_output_dir(ckpt_path) -> str:
    """``<dir>/evaluation`` of the first entry of ``ckpt_path``: the run (or sweep) dir it names or holds it."""
    first = Path(_specs(ckpt_path)[0]).expanduser()
    if glob.has_magic(str(first)):
        first = Path(*literal_prefix(first.parts))
    if first.is_dir():
        return str(first / "evaluation")
    run_dir = first.parent.parent if first.parent.name == "checkpoints" else first.parent
    return str(run_dir / "evaluation")


def _test_split_batches(run_config: Mapping, cfg: DictConfig, skipped: list[str]) -> Iterator[Tensor]:
    data = dict(run_config["data"])  # checked with the whole stored config by load_module
    # Only reads: report_dir None (evaluating must not rewrite the training run's bad_files.csv), the per-user cache
    # (not a folder the file names), and the demo's images read as the plain folder they are (never generated into
    # a root the file names). The same files and seed give the same test split.
    data.update(batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers, report_dir=None, cache_dir=None)
    if str(data.get("_target_")).endswith("DemoDataModule"):
        data = {k: v for k, v in data.items() if k not in ("images_per_class", "source_size")}
        data["_target_"] = "art_diffusion.data.ArtDataModule"
    datamodule = instantiate(data)
    datamodule.setup("test")
    for images, _labels, events in datamodule.test_dataloader():
        skipped.extend(path for path, _reason, _detail in events["skipped"])
        yield images


def _folder_batches(reconstructor: Reconstructor, root: str, batch_size: int, skipped: list[str]) -> Iterator[Tensor]:
    files = find_inputs(root)
    for start in range(0, len(files), batch_size):
        images = []
        for file in files[start:start + batch_size]:
            try:
                images.append(reconstructor.load(file.path))
            except BadImage as exc:
                log.warning("Skipping unreadable image %s (%s)", file.path, exc)
                skipped.append(str(file.path))
        if images:
            yield torch.stack(images)


class Scorer(nn.Module):
    """Per-image scores of reconstructions against their inputs; the VGG networks are built once."""

    def __init__(self, vgg_weights: str, vgg_layers: int, lpips_weights: str | None) -> None:
        super().__init__()
        self.normalize = ImageNetNormalize()
        self.perceptual = PerceptualLoss(vgg_weights, vgg_layers)
        self.perceptual.build()
        self.lpips = LPIPS(lpips_weights) if lpips_weights else None

    @torch.no_grad()
    def forward(self, reconstructions: Tensor, images: Tensor) -> dict[str, Tensor]:
        scores = {
            "mse": mse(reconstructions, images),
            "psnr": psnr(reconstructions, images),
            "ssim": ssim(reconstructions, images),
            "perceptual": self.perceptual.per_image(self.normalize(reconstructions), self.normalize(images)),
        }
        if self.lpips is not None:
            scores["lpips"] = self.lpips(reconstructions, images)
        return {name: value.float().cpu() for name, value in scores.items()}


def _real_images(run_config: Mapping, cfg: DictConfig, size: int, count: int) -> Tensor:
    """At most ``count`` real images: from ``data.root``, else from the run's test split (held out from training)."""
    if cfg.data.root:
        return load_images(cfg.data.root, size, max_images=count)
    batches, have = [], 0
    for images in _test_split_batches(run_config, cfg, []):
        batches.append(images)
        have += len(images)
        if have >= count:
            break
    return torch.cat(batches)[:count]


def evaluate_generator(module: DiffusionModule, run_config: Mapping, cfg: DictConfig, device: torch.device) -> dict:
    """FD-VGG and KID between ``generative.num_images`` generated images and as many real ones, at the model's
    size."""
    g = cfg.generative
    check_steps("generative.steps", g.steps, g.sampler, module.schedule.timesteps)
    fake = module.sample(g.num_images, sampler=g.sampler, steps=g.steps, batch_size=g.batch_size,
                         generator=torch.Generator().manual_seed(g.seed)).cpu()
    real = _real_images(run_config, cfg, module.image_size, g.num_images)
    log.info("FD-VGG of %d generated vs %d real images from %s", len(fake), len(real),
             cfg.data.root or "the run's test split")
    vgg = layer_extractor(g.vgg_weights)
    real_f, fake_f = (features(x, vgg, batch_size=cfg.data.batch_size, device=str(device)) for x in (real, fake))
    return {**scores(real_f, fake_f), "images": len(fake), "real_images": len(real), "skipped": 0}


def evaluate_checkpoint(ckpt_path: str, cfg: DictConfig, device: torch.device) -> dict[str, float]:
    module, run_config = load_module(ckpt_path, device, trusted_classes=cfg.trusted_classes)
    if isinstance(module, DiffusionModule):
        return evaluate_generator(module, run_config, cfg, device)
    loss = run_config.get("loss", {})
    scorer = Scorer(loss.get("vgg_weights", "imagenet"), loss.get("vgg_layers", 16),
                    cfg.lpips.vgg_weights if cfg.lpips.enabled else None).to(device)
    reconstructor = Reconstructor(module.net, run_config["data"]["image_size"], "train", device=device)
    skipped: list[str] = []
    if cfg.data.root:
        batches = _folder_batches(reconstructor, cfg.data.root, cfg.data.batch_size, skipped)
    else:
        batches = _test_split_batches(run_config, cfg, skipped)

    per_image: dict[str, list[Tensor]] = {}
    for images in batches:
        reconstructions = reconstructor(images)
        for name, values in scorer(reconstructions, images.to(device)).items():
            per_image.setdefault(name, []).append(values)
    if not per_image:
        raise DataError(f"No image could be evaluated for {ckpt_path}: all {len(skipped)} inputs were unreadable.")
    results = {name: float(torch.cat(values).nanmean()) for name, values in per_image.items()}
    results["images"] = sum(len(v) for v in per_image["mse"])
    results["skipped"] = len(skipped)
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    labels = {path: _short(path) for path in results}
    width = max(len("metric"), *(len(f"{m} ({d})") for m, d in METRICS.items()))
    columns = [max(12, len(label)) for label in labels.values()]
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{label:>{c}}" for label, c in zip(labels.values(), columns))]
    for metric, better in METRICS.items():
        if not any(metric in r for r in results.values()):
            continue
        cells = [_fmt(r.get(metric, math.nan)) for r in results.values()]
        lines.append(f"{f'{metric} ({better})':<{width}}  " + "  ".join(f"{v:>{c}}" for v, c in zip(cells, columns)))
    for count in ("images", "real_images", "skipped"):  # real_images: what a generator's FD-VGG compared against
        if not any(count in r for r in results.values()):
            continue
        cells = [str(r.get(count, "")) for r in results.values()]
        lines.append(f"{count:<{width}}  " + "  ".join(f"{v:>{c}}" for v, c in zip(cells, columns)))
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}" if abs(value) < 100 else f"{value:.2f}"


def _short(path: str) -> str:
    p = Path(path)
    return f"{p.parent.parent.name}/{p.name}" if p.parent.name == "checkpoints" else p.name


def evaluate(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Scores of every checkpoint in ``cfg.ckpt_path``; writes ``output_dir/metrics.json`` and prints a table."""
    check_values(cfg, "evaluate")
    device = resolve_device(cfg.device)
    checkpoints, out = checkpoint_list(cfg.ckpt_path), Path(cfg.output_dir)
    with output_folder(out, inputs=map(Path, checkpoints)) as folder:
        folder.claim("metrics.json")  # before the scoring: a run dir's own metrics.json is not replaced
        results = {path: evaluate_checkpoint(path, cfg, device) for path in checkpoints}
        data = cfg.data.root or "the test split stored in each checkpoint's config"
        report = {"data": str(data), "lpips_backbone": cfg.lpips.vgg_weights if cfg.lpips.enabled else None,
                  "checkpoints": results}
        write_json(out / "metrics.json", report)
    print(f"Evaluated on {data}\n" + format_table(results))
    log.info("Metrics written to %s", out / "metrics.json")
    return results

