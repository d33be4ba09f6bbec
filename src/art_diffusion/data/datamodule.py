"""ArtDataModule: an art ImageFolder split deterministically into train/val/test; DemoDataModule generates one."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from art_diffusion.data.dataset import ImageFiles, list_image_folder
from art_diffusion.data.sampler import EpochShuffleSampler

EXPECTED_LAYOUT = """\
Expected an ImageFolder, one sub-folder per class, e.g. the Kaggle "Art Images" training_set:
    {root}/
        drawings/   *.jpg
        engraving/  *.jpg
        iconography/ ...
        painting/   ...
        sculpture/  ...
Point data.root at such a folder, or try the built-in demo data: python scripts/train.py experiment=demo"""


def default_num_workers() -> int:
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """A seeded permutation cut into test | val | train; the same ``seed`` and ``n`` always give the same split."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    return {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}


class ArtDataModule(L.LightningDataModule):
    def __init__(
        self,
        root: str,
        image_size: int = 128,
        batch_size: int = 32,
        num_workers: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        val_root: str | None = None,
        seed: int = 42,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.datasets: dict[str, ImageFiles] = {}
        self.classes: list[str] = []
        # Draws the train loader's worker base seed, so the global RNG is not consumed at a point that differs
        # between an uninterrupted and a resumed run; saved in checkpoints through state_dict().
        self.train_generator = torch.Generator().manual_seed(seed)

    def _list(self, root: str) -> list[tuple[str, int]]:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"data.root {str(path)!r} does not exist.\n" + EXPECTED_LAYOUT.format(root=path))
        samples, classes = list_image_folder(path)
        if not samples:
            raise FileNotFoundError(f"No image files under {str(path)!r}.\n" + EXPECTED_LAYOUT.format(root=path))
        self.classes = self.classes or classes
        return samples

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        samples = self._list(hp.root)
        val_fraction = 0.0 if hp.val_root else hp.val_fraction
        split = split_indices(len(samples), val_fraction, hp.test_fraction, hp.seed)
        subsets = {name: [samples[i] for i in idx] for name, idx in split.items()}
        if hp.val_root:
            subsets["val"] = self._list(hp.val_root)
        wanted = {"train": True, "val": bool(hp.val_root) or hp.val_fraction > 0, "test": hp.test_fraction > 0}
        for name, subset in subsets.items():
            if subset:
                self.datasets[name] = ImageFiles(subset, hp.image_size)
            elif wanted[name]:
                raise ValueError(
                    f"The {name} split of {hp.root!r} is empty ({len(samples)} images, val_fraction={hp.val_fraction},"
                    f" test_fraction={hp.test_fraction}): add images or change the fractions (data.val_fraction,"
                    f" data.test_fraction)."
                )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        hp = self.hparams
        if split not in self.datasets:
            raise ValueError(f"There is no {split} split: data.{split}_fraction is 0.")
        workers = default_num_workers() if hp.num_workers is None else hp.num_workers
        pin = torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory
        return DataLoader(
            self.datasets[split],
            batch_size=hp.batch_size,
            # shuffled by (seed, epoch), not by the global RNG: a resumed run sees the batches it would have seen
            sampler=EpochShuffleSampler(self.datasets[split], hp.seed) if shuffle else None,
            generator=self.train_generator if shuffle else None,
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=workers > 0,
            drop_last=False,
        )

    def state_dict(self) -> dict:
        return {"train_generator": self.train_generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        if "train_generator" in state_dict:
            self.train_generator.set_state(state_dict["train_generator"])

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class DemoDataModule(ArtDataModule):
    """The built-in demo: a procedurally generated art ImageFolder, written once under ``root``."""

    def __init__(self, root: str, images_per_class: int = 48, source_size: int = 128, **kwargs) -> None:
        super().__init__(root, **kwargs)

    def prepare_data(self) -> None:
        from art_diffusion.data.demo import generate_demo_dataset

        generate_demo_dataset(
            self.hparams.root, self.hparams.images_per_class, self.hparams.source_size, seed=self.hparams.seed
        )

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # idempotent; also covers use outside a Trainer
        super().setup(stage)
