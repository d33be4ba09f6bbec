"""The real Hydra train config, composed the way the tests need it: TINY sizes, offline, the run dir set."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

import art_diffusion.run.resolvers  # noqa: F401  (registers the resolvers the configs use)

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"

#: The pages whose commands are run, in this order: README.md, then the topic pages, each after the ones whose
#: runs it uses (inference and generation score checkpoints that earlier pages trained).
DOC_PAGES = ("README.md", "docs/data.md", "docs/configuration.md", "docs/loggers-and-debugging.md", "docs/sweeps.md",
             "docs/clusters.md", "docs/inference.md", "docs/checkpoints.md", "docs/generation.md",
             "docs/reliability.md", "docs/pretrained.md")

#: experiment=demo's learning rate for the reconstructor, which the TINY runs train with
DEMO_LR: float = OmegaConf.load(CONF_DIR / "experiment_model" / "demo_reconstructor.yaml").optim.lr

# Small enough for a 2-core CPU: 4-channel net, 32 px, 20 demo images, random VGG (no weight download).
TINY = [
    "experiment=demo",
    "model.net.base_channels=4",
    "loss.vgg_weights=random",
    "data.images_per_class=4",
    "data.source_size=48",
    "data.image_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "callbacks.reconstructions.num_images=4",
]


def compose_train_cfg(output_dir: Path, *overrides: str, tiny: bool = True) -> DictConfig:
    """The real train config with (TINY and) ``overrides``, its run dir set to ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        # header checks and pixel caches stay out of ~/.cache, shared by the runs of one test
        cache = f"data.cache_dir={output_dir.parent / 'data-cache'}"
        cfg = compose("train", overrides=[*(TINY if tiny else []), cache, *overrides], return_hydra_config=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(REPO)
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig().set_config(cfg)
    return cfg
