"""The model card (``README.md``) of an exported folder: what the model does, its data, its training config, its
final metrics, a grid of its outputs, how to load it, and what it must not be used for."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from art_diffusion import __version__
from art_diffusion.data.report import printable
from art_diffusion.storage import read_json

#: The run config's groups shown under "Training config" (paths, loggers and callbacks say nothing about the model).
CONFIG_GROUPS = ("model", "loss", "optim", "scheduler", "data", "trainer", "seed")
WHAT = {
    "reconstruct": "reconstructs the image it is given (the ConvDiffusionModel of \"Implementing Diffusion Models for "
                   "Creative AI Art Generation\": a three-level convolutional encoder-decoder with additive skips). "
                   "It is an autoencoder-style reconstructor, not a generative model: it makes no new images.",
    "generate": "generates new images from noise: a denoising diffusion model (DDPM, Ho et al. 2020) whose denoiser "
                "was trained on the art below; it samples with its EMA weights.",
}


def read_metrics(path: Path) -> dict[str, float]:
    """The numbers of a run's metrics.json (untrusted: anything but a name and a finite number is left out)."""
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def _data_section(data: Mapping[str, Any], class_counts: dict[str, int] | None) -> list[str]:
    demo = str(data.get("_target_", "")).endswith("DemoDataModule")
    lines = [f"- Folder: `{printable(str(data.get('root')))}`" + (" (the project's generated demo data, "
             f"{data.get('images_per_class')} images per class)" if demo else ""),
             f"- Image size: {data.get('image_size')} x {data.get('image_size')} px (every image resized, aspect "
             "ratio squashed, as the article does)"]
    if data.get("val_root"):
        lines.append(f"- Validation folder: `{printable(str(data.get('val_root')))}`")
    lines.append(f"- Split: {data.get('val_fraction')} of the images for validation, {data.get('test_fraction')} for "
                 f"the test, drawn with data.seed={data.get('seed')}")
    if class_counts:
        counts = ", ".join(f"{printable(name)} {count}" for name, count in class_counts.items())
        lines.append(f"- Classes (image files listed at export time, before unreadable ones were skipped): {counts}; "
                     f"{sum(class_counts.values())} in all")
    else:
        lines.append("- Classes: the folder was not found at export time, so the counts are unknown")
    return lines


def model_card(task: str, config: Mapping[str, Any], run_config: Mapping[str, Any], metrics: dict[str, float],
               class_counts: dict[str, int] | None, grid: str | None, source: str, onnx: str | None) -> str:
    """The text of README.md (``config``: config.json; ``run_config``: the checkpoint's stored run config)."""
    net = config["net"]["_target_"].rsplit(".", 1)[-1]
    lines = [f"# art-diffusion {net} ({'reconstructor' if task == 'reconstruct' else 'DDPM'})", "",
             f"This model {WHAT[task]}", "",
             f"Exported with art-diffusion {__version__} from `{printable(source)}`.", "",
             "## Use it", "", "```python", "import art_diffusion", "",
             'model = art_diffusion.load_pretrained("path/to/this/folder")  # reads JSON and safetensors only']
    if task == "reconstruct":
        lines += ["images = model.reconstruct([PIL.Image.open(\"painting.jpg\")])  # PIL images at the input sizes"]
    else:
        example = f', class_name="{config["class_names"][0]}"' if config["diffusion"]["num_classes"] and \
            config["class_names"] else ""
        lines += [f"images = model.generate(4{example}, steps=20, seed=0)  # PIL images, as generate.py makes them"]
    lines += ["```", "",
              "| file | content |", "|---|---|",
              "| `model.safetensors` | the network's weights" + (" (the EMA of the trained weights, what it samples "
                                                                    "with)" if task == "generate" else "") + " |",
              "| `config.json` | the network's class and constructor arguments, image size, pixel ranges, class "
              "names, the exporting version |",
              "| `README.md` | this card |"]
    if grid:
        lines.append(f"| `{grid}` | " + ("validation images (top) above their reconstructions (bottom), from "
                                         "training" if task == "reconstruct" else "samples of this model, seed 0, "
                                         "the generate.py defaults") + " |")
    if onnx:
        lines.append("| `model.onnx` | the network for ONNX runtimes: NCHW float in [0, 1], batch and sides dynamic, "
                     "sides multiples of 8 |")
    lines += ["", f"Image size: {config['image_size']} px. Pixels are RGB in [0, 1], no mean/std normalisation"
              + (" (the model works in [-1, 1] inside)." if task == "generate" else ".")]
    if grid:
        lines += ["", f"![{'reconstructions' if task == 'reconstruct' else 'samples'}]({grid})"]
    lines += ["", "## Training data", "", *_data_section(run_config.get("data", {}), class_counts), "",
              "## Final metrics", ""]
    if metrics:
        lines += ["From the run's `metrics.json` (`val/*`: last validation; `test/*`: the best checkpoint on the test "
                  "split):", "", "| metric | value |", "|---|---|",
                  *[f"| {printable(name)} | {value:.6g} |" for name, value in sorted(metrics.items())]]
    else:
        lines.append("The run's `metrics.json` was not found next to the checkpoint, so none are reported.")
    shown = {key: run_config[key] for key in CONFIG_GROUPS if key in run_config}
    if isinstance(shown.get("model"), Mapping):  # the loss, optimizer and scheduler are shown as their own groups
        shown["model"] = {k: v for k, v in shown["model"].items() if k not in ("loss", "optimizer", "scheduler")}
    lines += ["", "## Training config", "",
              "The run's resolved config (these groups; the checkpoint stores all of it):",
              "", "```yaml", OmegaConf.to_yaml(OmegaConf.create(shown)).rstrip(), "```", "",
              "## Limitations: what not to use it for", "",
              "- The article's data, Kaggle's \"Art Images: Drawing/Painting/Sculptures/Engravings\", was scraped from "
              "the web; the licences of its images were not checked, by the dataset or by this project. Do not use "
              "this model, or what it makes, commercially or as if its training data were licensed.",
              "- It was trained on a small set of art images at low resolution: it is a research and teaching "
              "model, not a restoration, authentication or forensic tool. Its outputs are not evidence of what an "
              "artwork looks or looked like.",
              "- Biases of the data (which artists, periods and cultures the scraped collection holds) carry into "
              "the model."]
    if task == "generate":
        lines.append("- Generated images can resemble training images; do not present them as original art of a "
                     "named artist.")
    return "\n".join(lines) + "\n"
