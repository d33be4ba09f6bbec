"""A test-only Lightning callback: each rank saves what it ends training with, so a test can compare the ranks."""

import os
import socket
from pathlib import Path

import lightning as L
import torch


class RankProbe(L.Callback):
    """At the end of fit, every rank writes ``rank_<global rank>.pt``: world size, its batches, its network state,
    and who started it (Lightning's cluster environment, SLURM's task id), on which host, and which addresses its TCP
    connections (gloo's among them) go to."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.first_batch: torch.Tensor | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_batch is None:
            self.first_batch = batch[0].detach().cpu().clone()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.net.state_dict().items()}
        environment = trainer.strategy.cluster_environment
        torch.save({"world_size": trainer.world_size, "global_rank": trainer.global_rank,
                    "first_batch": self.first_batch, "net": state,
                    "cluster_environment": type(environment).__name__,
                    "auto_requeue": getattr(environment, "auto_requeue", None),
                    "slurm_procid": os.environ.get("SLURM_PROCID"), "host": socket.gethostname(),
                    "master_addr": os.environ.get("MASTER_ADDR"), "peers": _established_peers()},
                   self.dirpath / f"rank_{trainer.global_rank}.pt")


def _established_peers() -> list[str]:
    """The remote IPv4 addresses of this process's network namespace's established TCP connections (/proc/net/tcp)."""
    peers = set()
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01":  # ESTABLISHED
            address = int(fields[2].split(":")[0], 16)
            peers.add(socket.inet_ntoa(address.to_bytes(4, "little")))
    return sorted(peers)
