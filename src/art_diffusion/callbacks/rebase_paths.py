"""RebaseCheckpointPaths: a run dir that was moved keeps its ModelCheckpoint state when it is resumed."""

from __future__ import annotations

from typing import Any

import lightning as L


def rebase_paths(node: Any, old: str, new: str) -> Any:
    """Every path under the run's old location moved to its new one (a run dir copied to another machine)."""
    if isinstance(node, dict):
        return {rebase_paths(k, old, new): rebase_paths(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [rebase_paths(v, old, new) for v in node]
    if isinstance(node, str) and (node == old or node.startswith(old.rstrip("/") + "/")):
        return new + node[len(old.rstrip("/")):]
    return node


class RebaseCheckpointPaths(L.Callback):
    """For a run dir that was moved: points the paths in the checkpoint's callback states at the new location.

    Lightning's ModelCheckpoint restores its best score and file names only when its saved ``dirpath`` equals the
    current one; otherwise it starts afresh and writes ``best-v1.ckpt`` beside the old ``best.ckpt``.
    """

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if "callbacks" in checkpoint:
            checkpoint["callbacks"] = rebase_paths(checkpoint["callbacks"], self.old, self.new)
