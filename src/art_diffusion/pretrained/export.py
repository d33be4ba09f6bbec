"""export(cfg): a checkpoint as a folder to share: model.safetensors, config.json, README.md (the model card), a grid
image, and with ``format=onnx`` the reconstructor as model.onnx."""

from __future__ import annotations

import contextlib
import io
import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from art_diffusion import ConfigError, MissingPathError
from art_diffusion.checkpoints import load_module
from art_diffusion.lightning import DiffusionModule, ReconstructionModule
from art_diffusion.pretrained.card import model_card, read_metrics
from art_diffusion.pretrained.folder import (
    CARD_FILE,
    CONFIG_FILE,
    ONNX_FILE,
    SHA256_KEY,
    WEIGHTS_FILE,
    folder_config,
    write_config,
    write_weights,
)
from art_diffusion.run.run_dir import BEST_CHECKPOINT, METRICS_FILE
from art_diffusion.run.validate import check_values
from art_diffusion.storage import atomic_path, atomic_write, output_folder
from art_diffusion.storage.outputs import RECORD_FILE

log = logging.getLogger(__name__)

#: Why a DDPM has no ONNX export (the message of format=onnx on a model=ddpm checkpoint).
NO_DDPM_ONNX = (
    "format=onnx exports the reconstructor only. A DDPM generates by calling its denoiser 20 to 1000 times in the "
    "sampler's loop (schedule, DPM-Solver++/DDIM update, classifier-free guidance, the seeded noise), which lives "
    "in Python, not in the network: an ONNX file of the denoiser alone would generate nothing by itself, and its "
    "sampler would have to be rewritten for each runtime. Export the folder (format=safetensors) and sample with "
    "art_diffusion.load_pretrained(folder).generate(...)."
)


class ClampedNet(nn.Module):
    """What model.onnx computes: the network's output clamped to [0, 1], as reconstruct.py's Reconstructor does."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).clamp(0, 1)


def checkpoint_of(spec: str) -> Path:
    """``ckpt_path``: a run dir (its checkpoints/best.ckpt) or a checkpoint file."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / BEST_CHECKPOINT).is_file():
            raise MissingPathError(f"ckpt_path={spec}: a directory without {BEST_CHECKPOINT}; pass a run dir of "
                                   "scripts/train.py or a .ckpt file.")
        return path / BEST_CHECKPOINT
    return path  # load_checkpoint says so when it does not exist


def _run_dir(ckpt: Path) -> Path:
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def _class_counts(root) -> dict[str, int] | None:
    """Image files per class folder of the training data, when the folder is here (the project's one lister)."""
    from art_diffusion.data.listing import list_image_folder

    if not root or not Path(str(root)).expanduser().is_dir():
        return None
    try:
        listing = list_image_folder(Path(str(root)).expanduser())
    except OSError:
        return None
    counts = dict.fromkeys(listing.classes, 0)
    for file in listing.files:
        counts[listing.classes[file.label]] += 1
    return counts


def _reconstruction_grid(run_dir: Path, path: Path) -> str | None:
    """The newest ``reconstructions/epoch_XXX.png`` of the run, decoded and written again as ``path``; its name."""
    from PIL import Image

    from art_diffusion.data.images import BadImage, load_rgb

    grids = sorted((run_dir / "reconstructions").glob("epoch_*.png"))
    if not grids:
        return None
    try:
        pixels = load_rgb(grids[-1], None)
    except BadImage:
        return None
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="png")
    return path.name


def _sample_grid(module: DiffusionModule, count: int, path: Path) -> str | None:
    """``count`` samples (seed 0, generate.py's sampler and steps), as ``path``; its name."""
    from torchvision.utils import make_grid

    from art_diffusion.tools.generate import to_pil

    if count == 0:
        return None
    images = module.sample(count, sampler="dpm++2m", steps=min(20, module.schedule.timesteps),
                                 generator=torch.Generator().manual_seed(0), guidance_scale=3.0, batch_size=16)
    grid = make_grid(images.cpu(), nrow=math.ceil(math.sqrt(count)), padding=2, pad_value=1.0)
    with atomic_path(path) as tmp:
        to_pil(grid).save(tmp, format="png")
    return path.name


def export_onnx(net: nn.Module, path: Path, image_size: int) -> float | None:
    """``net`` (clamped to [0, 1]) as ONNX with a dynamic batch and dynamic sides (multiples of 8), atomically.
    Returns the largest difference to PyTorch on a random 2 x 3 x 40 x 56 batch when onnxruntime is installed."""
    import numpy as np

    from art_diffusion.nets import DOWNSAMPLING_FACTOR

    model = ClampedNet(net).eval()
    example = torch.rand(2, 3, image_size, image_size)
    dims = {0: torch.export.Dim("batch", min=1, max=4096),
            2: DOWNSAMPLING_FACTOR * torch.export.Dim("height_8", min=1, max=2048),
            3: DOWNSAMPLING_FACTOR * torch.export.Dim("width_8", min=1, max=2048)}
    # the exporter prints its progress and its optimiser's passes: the log line below says what matters
    with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(model, (example,), str(tmp), dynamo=True, external_data=False, input_names=["images"],
                          output_names=["reconstructions"], dynamic_shapes={"images": dims}, verbose=False)
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    check = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(check).numpy()
    return float(np.abs(session.run(None, {"images": check.numpy()})[0] - expected).max())


def export(cfg: DictConfig) -> Path:
    """Write the folder ``cfg.output_dir`` from ``cfg.ckpt_path``; returns the folder."""
    check_values(cfg, "export")
    ckpt = checkpoint_of(str(cfg.ckpt_path))
    module, run_config = load_module(ckpt, "cpu", None, cfg.trusted_classes)
    if isinstance(module, DiffusionModule):
        task, net, class_names = "generate", module.ema.average, module.class_names
    elif isinstance(module, ReconstructionModule):
        task, net, class_names = "reconstruct", module.net, None
    else:
        raise ConfigError(f"ckpt_path={ckpt} holds a {type(module).__name__}, which export does not know.")
    if cfg.format == "onnx" and task == "generate":
        raise ConfigError(NO_DDPM_ONNX)
    run_dir, out = _run_dir(ckpt), Path(cfg.output_dir)
    counts = _class_counts(run_config.get("data", {}).get("root"))
    if task == "reconstruct" and counts:
        class_names = list(counts)
    config = folder_config(task, run_config, class_names)
    grid_name = "reconstructions.png" if task == "reconstruct" else "samples.png"
    onnx = ONNX_FILE if cfg.format == "onnx" else None
    with output_folder(out, inputs=[Path(ckpt)]) as folder:
        folder.claim(WEIGHTS_FILE, CONFIG_FILE, CARD_FILE, grid_name, *([onnx] if onnx else []))
        config[SHA256_KEY] = write_weights(net, out / WEIGHTS_FILE)  # read_net checks the file against it
        write_config(config, out / CONFIG_FILE)
        if task == "reconstruct":
            grid = _reconstruction_grid(run_dir, out / grid_name)
        else:
            grid = _sample_grid(module, cfg.card_samples, out / grid_name)
        if onnx:
            difference = export_onnx(net, out / onnx, config["image_size"])
            log.info("Wrote %s; %s", out / onnx, "onnxruntime not installed: not compared with PyTorch"
                     if difference is None else f"largest difference to PyTorch on a 2x3x40x56 batch: {difference:.2e}")
        metrics = read_metrics(run_dir / METRICS_FILE)
        atomic_write(out / CARD_FILE, model_card(task, config, run_config, metrics, counts, grid, str(ckpt), onnx))
    files = sorted(p.name for p in out.iterdir() if not p.name.endswith(".tmp") and p.name != RECORD_FILE)
    print(f"Exported {ckpt} to {out}: {', '.join(files)}")
    return out
