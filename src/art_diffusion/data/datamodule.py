"""ArtDataModule: an art ImageFolder split deterministically into train/val/test; DemoDataModule generates one.

Start-up lists the folder (names and stat only), then either checks every header in parallel (remembered by path,
size and mtime, so a second run starts at once) or, with ``cache=True``, decodes every image once into the pixel
cache. Files refused there are in the report before training starts; with too many of them (``max_bad_fraction``)
setup stops with an error. Without the cache, damage deep inside a file is found by the DataLoader worker that
decodes it: it serves the next file and sends the finding back inside the batch, where ``on_before_batch_transfer``
adds it to the report. Batches from the loaders are therefore ``(images, labels, events)``; the LightningModule
receives ``(images, labels)``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from art_diffusion import DataError
from art_diffusion.data import feature_store, header_check, pixel_cache, row_store
from art_diffusion.data.dataset import CachedImages, DecodedImages, collate
from art_diffusion.data.epoch_sampler import EpochShuffleSampler
from art_diffusion.data.folders import check_held_out, describe_oddities, list_checked_folder, map_classes
from art_diffusion.data.listing import Listing, SourceFile
from art_diffusion.data.pool import cores
from art_diffusion.data.report import BadFileReport, printable
from art_diffusion.storage import cache_root, optional_cache_dir, unwritable

log = logging.getLogger(__name__)


def default_num_workers() -> int:
    return min(8, cores())


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """A seeded permutation cut into test | val | train; the same ``seed`` and ``n`` always give the same split."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    return {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}


def skipped_stages(val_root: str | None, val_fraction: float, test_fraction: float) -> set[str]:
    """The stages a zero split fraction turns off: "val" (data.val_fraction=0 without data.val_root), "test"."""
    return {stage for stage, off in (("val", not val_root and val_fraction == 0), ("test", test_fraction == 0)) if off}


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
        persistent_workers: bool = True,
        cache: bool | str = "auto",
        cache_dir: str | None = None,
        report_dir: str | None = None,
        max_pixels: int = 50_000_000,
        min_size: int = 32,
        max_bad_fraction: float = 0.5,
        hflip: bool = False,
        feature_store: bool | str = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.datasets: dict[str, Dataset] = {}
        self.classes: list[str] = []
        self.report = BadFileReport(report_dir)
        self.store: pixel_cache.PixelStore | None = None  # with the cache on, after setup
        self.use_cache = False  # the cache setting resolved in setup (auto: on when the store fits on the disk)
        self.feature_path: Path | None = None  # the target-feature store the train split serves, once attached
        # files decoded by the loaders, per stage and epoch: all zeros with the pixel cache
        self.decoded: dict[str, dict[int, int]] = {}
        # Draws the train loader's worker base seed, so the global RNG is not consumed at a point that differs
        # between an uninterrupted and a resumed run; saved in checkpoints through state_dict().
        self.train_generator = torch.Generator().manual_seed(seed)

    def _list(self, root: str, key: str = "data.root") -> Listing:
        listing = list_checked_folder(root, key)
        self.classes = self.classes or listing.classes
        return listing

    @property
    def _workers(self) -> int:
        return default_num_workers() if self.hparams.num_workers is None else self.hparams.num_workers

    @property
    def _is_global_zero(self) -> bool:
        return self.trainer.is_global_zero if self.trainer is not None else True

    def _cache_dir(self) -> Path:
        if self.hparams.cache_dir:
            return Path(self.hparams.cache_dir).expanduser()
        return cache_root()

    def _find_bad(self, files: list[SourceFile], roots: list[str]) -> tuple[dict[str, tuple[str, str]], str]:
        """Bad files known before training, and how they were found (for the summary line)."""
        hp = self.hparams
        path = pixel_cache.store_path(self._cache_dir(), roots, files, hp.image_size, hp.max_pixels, hp.min_size)
        self.use_cache = self._resolve_cache(len(files), path)
        if self.use_cache:
            self.store = pixel_cache.open_or_build(path, files, hp.image_size, hp.max_pixels, hp.min_size,
                                                   self._workers)
            how = f"built in {self.store.built_s:.1f} s" if self.store.built_s is not None else "reused"
            return {files[row].path: verdict for row, verdict in self.store.bad.items()}, f"pixel cache {how}: {path}"
        # the header cache only saves time: a cache dir that cannot be written means checking every header
        what = "the header cache (every header is checked again)"
        directory = optional_cache_dir(self._cache_dir(), what)  # the root first: one warning, shared with the others
        cache = directory and header_check.cache_file(directory, roots, hp.max_pixels, hp.min_size)
        if cache and not optional_cache_dir(cache.parent, what):  # its own folder may be another user's
            cache = None
        verdicts = header_check.check_headers(files, hp.max_pixels, hp.min_size, cache, self._workers)
        return {path: v for path, v in verdicts.items() if v}, "headers checked; pixel damage is reported when met"

    def _resolve_cache(self, num_files: int, path: Path) -> bool:
        """Whether to use the pixel store at ``path``: its folder, slot lock and readers folder must be writable
        (every reader writes there), else ``auto`` is off with one warning and ``true`` one error."""
        directory, cache = self._cache_dir(), self.hparams.cache
        if cache is False or cache == "false":
            return False
        why = unwritable(directory) or row_store.unusable(path)
        if why and cache != "auto":  # data.cache=true: the run was asked to read pixels from there
            raise DataError(f"data.cache=true needs a writable cache directory, and {directory} is not ({why}). "
                            "Point data.cache_dir (or ART_DIFFUSION_CACHE) at a writable directory, or train with "
                            "data.cache=false.")
        if why:
            if self._is_global_zero:
                log.warning("Pixel cache (data.cache=auto): off, the cache directory %s cannot be written (%s)",
                            directory, why)
            return False
        if cache != "auto":
            return bool(cache)
        fits, verdict = pixel_cache.fits(directory, num_files, self.hparams.image_size)
        if self._is_global_zero:
            log.info("Pixel cache (data.cache=auto): %s (%s)", "on" if fits else "off, too large", verdict)
        return fits

    def _check_usable(self, listed: int, roots: list[str]) -> None:
        bad, hp = len(self.report.rows), self.hparams
        where = " and ".join(repr(r) for r in roots)
        if bad == listed:
            raise DataError(
                f"None of the {listed} image files under {where} can be used ({self.report.summary(listed)}). "
                f"Examples: {sorted(self.report.rows.items())[:3]}. Point data.root at a folder of images."
            )
        if bad > hp.max_bad_fraction * listed:
            raise DataError(
                f"{bad} of the {listed} image files under {where} are unusable, more than "
                f"data.max_bad_fraction={hp.max_bad_fraction} ({self.report.summary(listed)}). Is data.root the "
                "right folder? If so, raise data.max_bad_fraction to train on the rest."
            )

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        listings = [self._list(hp.root)]
        if hp.val_root:
            listings.append(map_classes(self._list(hp.val_root, "data.val_root"), self.classes, "data.val_root"))
            check_held_out(*listings, "data.val_root")
        roots = [hp.root] + ([hp.val_root] if hp.val_root else [])
        files = [f for listing in listings for f in listing.files]
        bad, how = self._find_bad(files, roots)
        for path, (reason, detail) in bad.items():
            self.report.add(path, reason, detail)
        if self._is_global_zero:  # written before the checks below, so a refused run still shows what was wrong
            self.report.write()
            self.report.log_files()
        self._check_usable(len(files), roots)
        if self._is_global_zero:
            log.info("Data: %s; %s%s", self.report.summary(len(files)), how, describe_oddities(listings))

        # The split is over the full listing, so a file's split does not change when files turn out bad.
        n_root = len(listings[0].files)
        val_fraction = 0.0 if hp.val_root else hp.val_fraction
        split = split_indices(n_root, val_fraction, hp.test_fraction, hp.seed)
        if hp.val_root:
            split["val"] = list(range(n_root, len(files)))
        wanted = {"train": True, **{stage: stage not in self.skipped_stages() for stage in ("val", "test")}}
        for name, indices in split.items():
            usable = [i for i in indices if files[i].path not in bad]
            if usable:
                self.datasets[name] = self._dataset(files, usable, hflip=hp.hflip and name == "train")
            elif wanted[name]:
                raise DataError(
                    f"The {name} split of {hp.root!r} has no usable image ({len(indices)} files, {len(files)} in"
                    f" all, val_fraction={hp.val_fraction}, test_fraction={hp.test_fraction}): add images or"
                    f" change the fractions (data.val_fraction, data.test_fraction)."
                )

    def attach_target_features(self, spec: feature_store.FeatureSpec) -> bool:
        """Serve each training image's target features from the store (built now if needed), after ``setup``.

        Called by a LightningModule whose loss compares its output with the VGG features of the input image
        (``data.feature_store``). Returns whether the store is on; every reason it is off is logged.
        """
        hp, train = self.hparams, self.datasets.get("train")
        setting = hp.feature_store
        if setting is False or setting == "False" or train is None:
            return False
        why_off = None
        if not self.use_cache:
            why_off = "the pixel cache is off (data.cache); the store is computed from it"
        elif hp.hflip:
            why_off = ("data.hflip=true flips training images at random and the store holds one orientation; "
                       "targets are computed every step")
        features = feature_store.layout(spec.extract, hp.image_size) if why_off is None else None
        if features is not None and features.dtype not in feature_store.ON_DISK:
            why_off = f"the step computes its targets in {features.dtype}, which the store does not keep"
        if why_off is None:
            rows = int(self.store.open().shape[0])
            fits, verdict = row_store.fits(self._cache_dir() / "features", features.bytes_for(rows),
                                           f"the VGG features of {rows} images")
            if setting == "auto" and not fits:
                why_off = f"too large ({verdict})"
            elif why_unwritable := row_store.unusable(feature_store.store_path(self._cache_dir(), self.store.path,
                                                                               spec)):
                if setting != "auto":  # data.feature_store=true: the run was asked to store them there
                    raise DataError(f"data.feature_store=true needs a writable {self._cache_dir() / 'features'} "
                                    f"({why_unwritable}). Point data.cache_dir at a writable directory, or train "
                                    "with data.feature_store=auto or false.")
                why_off = f"{self._cache_dir() / 'features'} cannot be written ({why_unwritable})"
        if why_off is not None:
            if self._is_global_zero:
                log.info("Target-feature store (data.feature_store=%s): off, %s", setting, why_off)
            return False
        path = feature_store.store_path(self._cache_dir(), self.store.path, spec)
        built_s = feature_store.open_or_build(path, self.store.path, spec, features, log.info)
        how = f"built in {built_s:.1f} s" if built_s is not None else "reused"
        if self._is_global_zero:
            log.info("Target-feature store (data.feature_store=%s): on, %s: %s (%s)", setting, how, path, verdict)
        self.datasets["train"] = CachedImages(self.store.path, train.rows, train.labels, features=path)
        self.feature_path = path
        return True

    def skipped_stages(self) -> set[str]:
        hp = self.hparams
        return skipped_stages(hp.val_root, hp.val_fraction, hp.test_fraction)

    def _dataset(self, files: list[SourceFile], indices: list[int], hflip: bool) -> Dataset:
        hp = self.hparams
        if self.use_cache:
            return CachedImages(self.store.path, indices, [files[i].label for i in indices], hflip=hflip)
        return DecodedImages([files[i] for i in indices], hp.image_size, hp.max_pixels, hp.min_size, hflip=hflip)

    def _loader(self, split: str, shuffle: bool) -> DataLoader | list:
        hp = self.hparams
        if split not in self.datasets:
            if split in self.skipped_stages():
                return []  # data.<split>_fraction=0: Lightning runs no loop over an empty list of loaders
            raise DataError(f"There is no {split} split: data.{split}_fraction is 0.")
        pin = torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory
        return DataLoader(
            self.datasets[split],
            batch_size=hp.batch_size,
            # shuffled by (seed, epoch), not by the global RNG: a resumed run sees the batches it would have seen
            sampler=EpochShuffleSampler(self.datasets[split], hp.seed) if shuffle else None,
            generator=self.train_generator if shuffle else None,
            num_workers=self._workers,
            collate_fn=collate,
            pin_memory=pin,
            persistent_workers=hp.persistent_workers and self._workers > 0,
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

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        images, labels, events, *features = batch  # features: the train split's, with the target-feature store
        self.record(events)
        return images, labels, *features

    def record(self, events: dict) -> None:
        """Take in a batch's events: count decodes, report files a worker found bad (each once)."""
        if self.trainer is not None and self.trainer.state.stage is not None:
            epochs = self.decoded.setdefault(self.trainer.state.stage.value, {})
            epochs[self.trainer.current_epoch] = epochs.get(self.trainer.current_epoch, 0) + events["decoded"]
        new = [s for s in events["skipped"] if self.report.add(*s)]
        for path, reason, detail in new:
            log.warning("Skipping %s: %s (%s); a neighbouring image is served in its place", printable(path), reason,
                        printable(detail))
        if new and self._is_global_zero:
            self.report.write()

    def teardown(self, stage: str) -> None:
        if self.decoded and self._is_global_zero:
            counts = ", ".join(f"{s} {[n for _, n in sorted(e.items())]}" for s, e in self.decoded.items())
            log.info("Files decoded by the DataLoaders, per epoch: %s", counts)


class DemoDataModule(ArtDataModule):
    """The built-in demo: a procedurally generated art ImageFolder, written once under ``root``."""

    def __init__(self, root: str, images_per_class: int = 48, source_size: int = 128, **kwargs) -> None:
        super().__init__(root, **kwargs)

    def prepare_data(self) -> None:
        from art_diffusion.data.demo import write_demo_dataset

        write_demo_dataset(
            self.hparams.root, self.hparams.images_per_class, self.hparams.source_size, seed=self.hparams.seed
        )

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # idempotent; also covers use outside a Trainer
        super().setup(stage)
