"""The composed config as a tree, printed when training starts and saved beside the run (``config_tree.log``).

One branch per top-level group (data, model, loss, ...), each the group's YAML with interpolations resolved, so the
paths and numbers are the ones this run uses; then the overrides given on the command line. ``extras.print_config``
turns it off. Hydra's ``.hydra/`` holds the same config unresolved, for tools.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree

from art_diffusion.storage import atomic_write

log = logging.getLogger(__name__)

#: The file written in the run dir.
CONFIG_TREE_FILE = "config_tree.log"
#: Groups shown first, in this order; the other top-level keys follow as they come.
FIRST = ("data", "model", "loss", "optim", "scheduler", "callbacks", "logger", "trainer", "paths")


def overrides() -> list[str]:
    """The overrides given on the command line (empty outside a Hydra run)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def config_tree(cfg: DictConfig, given: list[str]) -> Tree:
    """A rich Tree of ``cfg`` (without the ``hydra`` node), its groups first, then the ``given`` overrides."""
    tree = Tree("CONFIG", guide_style="dim")
    keys = [k for k in FIRST if k in cfg] + [k for k in cfg if k not in FIRST and k != "hydra"]
    for key in keys:
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if OmegaConf.is_config(value) else str(value)
        tree.add(key, guide_style="dim").add(Syntax(text.rstrip(), "yaml", theme="ansi_dark"))
    tree.add("overrides given").add(Syntax("\n".join(given) or "(none)", "bash", theme="ansi_dark"))
    return tree


@rank_zero_only
def print_config_tree(cfg: DictConfig, output_dir: str | Path) -> None:
    """Print the tree of ``cfg`` (colours when the terminal has them) and save it, plain, in ``output_dir``."""
    tree = config_tree(cfg, overrides())
    Console().print(tree)
    plain = Console(file=io.StringIO(), width=120, color_system=None, no_color=True)
    plain.print(tree)
    path = Path(output_dir) / CONFIG_TREE_FILE
    atomic_write(path, plain.file.getvalue())
    log.info("Config tree saved to %s", path)
