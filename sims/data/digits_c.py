"""`digits-c` and continual domain-shift streams over corrupted test sets (digits-c, CIFAR-10-C, ImageNet-C).

Papers: the corruptions and their severities follow Hendrycks & Dietterich, "Benchmarking Neural
Network Robustness to Common Corruptions and Perturbations" (ICLR 2019, arXiv:1903.12261); the
continual stream (one domain per corruption, visited in a fixed order at one severity, batches in
order, no domain labels at test time) follows the protocol of Wang et al., "Continual Test-Time Domain
Adaptation" (CoTTA, CVPR 2022, arXiv:2203.13591); the class-imbalanced order follows the Dirichlet
"temporally correlated" sampler of Yuan et al., "Robust Test-Time Adaptation in Dynamic Scenarios"
(RoTTA, CVPR 2023, arXiv:2303.13899), official code `LabelDirichletDomainSequence` [code]:
per domain, each class's items (in dataset order) are split into `S = min(#classes, 100)` time slots
by proportions drawn from Dirichlet(alpha·1_S); each slot concatenates its class chunks in a random
order; slots follow one another. Small alpha → long single-class runs.

Our design [inferred]:
- `digits-c`: the digits test split (450 images, `sims.data.digits`) corrupted image by image with
  `sims.data.corruptions`; `textures-C` (``source="textures"``, 16 or 32 px): the same over the
  textures-10 test split (1,000 patches, `sims.data.textures`), the TTA bed with headroom; each
  image's randomness is seeded from (seed, corruption, severity, image index), so an image has the
  same bytes whichever batch, order or stream it appears in.
- Without label shift, each domain is a seeded random permutation of its items (class-balanced in
  expectation). The order of domain d comes from `default_rng([seed, d, 0x5EED])`, so a corruption
  repeated in the stream (several rounds, as in CoTTA's 10-round setting) gets a new order each time.
- A stream computes batch k on demand from (config, k) alone; nothing of the stream is materialised
  and `start_at(k)` resumes at batch k without computing batches 0..k-1, yielding the same bytes.
- Real folders, read lazily: CIFAR-10-C / CIFAR-100-C (`<root>/<corruption>.npy`, uint8
  (5·N, H, W, 3), severities 1..5 stacked in blocks of N, plus `<root>/labels.npy`), opened with
  `np.load(mmap_mode='r')`; ImageNet-C (`<root>/<corruption>/<severity>/<class_dir>/*.JPEG`, classes
  indexed in sorted order as torchvision's ImageFolder does), opened one file at a time with PIL.
  Real images come back as (B, 3, H, W) float32 in [0, 1]; digits as (B, 1, s, s).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch

from methods.errors import CheckpointError, ConfigError, did_you_mean
from sims.data.corruptions import (
    COMMON_CORRUPTIONS,
    CORRUPTIONS,
    SEVERITIES,
    corruption_seed,
    get_corruption,
    global_numpy_scope,
)
from sims.data.digits import SIZES, load_digits_split
from sims.data.textures import SIZES as TEXTURE_SIZES
from sims.data.textures import load_textures_split

SOURCES = ("digits", "textures", "cifar10c", "imagenetc")
COMPUTED_SOURCES = ("digits", "textures")  # corrupted on demand from a shipped test split
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
_ORDER_TAG = 0x5EED  # separates order seeds from any other use of the base seed
MAX_SLOTS = 100  # RoTTA: number of time slots = number of classes, at most 100


# ---------------------------------------------------------------------------- config
@dataclass(frozen=True)
class CorruptionStreamConfig:
    """A continual corruption stream.

    Args:
        corruptions: domain names in stream order (repeats allowed: several rounds).
        severity: 1..5, one severity for every domain.
        batch_size: items per batch; the last batch of a domain may be shorter.
        image_size: digits only: 8, 16 or 32 px.
        seed: base seed of orders and of digits-c corruption noise.
        label_shift: None for a class-balanced random order, else the Dirichlet alpha (> 0) of
            RoTTA's class-imbalanced order (0.1 is strongly imbalanced).
        batches_per_domain: batches taken from each domain; None takes the whole split.
        source: "digits" (digits-c) or "textures" (textures-C), computed on demand; "cifar10c" or
            "imagenetc" (a folder).
        root: the folder of a real dataset; None for digits.
    """

    corruptions: tuple[str, ...] = COMMON_CORRUPTIONS
    severity: int = 5
    batch_size: int = 64
    image_size: int = 32
    seed: int = 0
    label_shift: float | None = None
    batches_per_domain: int | None = None
    source: str = "digits"
    root: str | None = None
    version: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.corruptions, str):
            raise ConfigError(
                f"corruptions must be a sequence of names, got the string {self.corruptions!r}."
            )
        object.__setattr__(self, "corruptions", tuple(self.corruptions))
        if not all(isinstance(name, str) for name in self.corruptions):
            raise ConfigError(f"corruptions must be names (strings), got {self.corruptions!r}.")
        if self.root is not None:
            object.__setattr__(self, "root", os.fspath(self.root))  # a Path from code, a str from TOML
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}.")
        if not self.corruptions:
            raise ConfigError("corruptions is empty: name at least one domain, e.g. ('gaussian_noise',).")
        if self.source not in SOURCES:
            raise ConfigError(
                f"source must be one of {SOURCES}, got {self.source!r}. {did_you_mean(self.source, SOURCES)}"
            )
        if self.source in COMPUTED_SOURCES:
            for name in self.corruptions:
                get_corruption(name)  # UnknownNameError listing the known ones
            sizes = SIZES if self.source == "digits" else TEXTURE_SIZES
            if self.image_size not in sizes:
                raise ConfigError(
                    f"image_size must be one of {sizes} for {self.source}, got {self.image_size!r}."
                )
            if self.root is not None:
                raise ConfigError(
                    f"root is only for folder sources; source {self.source!r} got root={self.root!r}."
                )
        elif not self.root:
            raise ConfigError(f"source {self.source!r} reads a folder: set root to its path.")
        sev = self.severity
        if isinstance(sev, bool) or not isinstance(sev, int | np.integer) or sev not in SEVERITIES:
            raise ConfigError(f"severity must be an integer 1..5, got {self.severity!r}.")
        _positive_int("batch_size", self.batch_size)
        if self.batches_per_domain is not None:
            _positive_int("batches_per_domain", self.batches_per_domain)
        alpha = self.label_shift
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, int | float | np.number)
                                  or not (float(alpha) > 0 and np.isfinite(alpha))):
            raise ConfigError(f"label_shift must be None or a Dirichlet alpha > 0, got {self.label_shift!r}.")
        if self.version != 1:
            raise ConfigError(
                f"CorruptionStreamConfig version {self.version!r} is unknown; this code reads version 1."
            )

    def to_dict(self) -> dict:
        return asdict(self) | {"corruptions": list(self.corruptions)}


def _positive_int(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}.")


# ---------------------------------------------------------------------------- sources
class DomainSource(Protocol):
    """Where a stream's items come from: one (corruption, severity) pair is one indexable set."""

    def corruptions(self) -> list[str]:
        """The corruption names this source holds."""

    def labels(self, corruption: str, severity: int) -> np.ndarray:
        """All labels (N,) of one domain, in item order."""

    def load(self, corruption: str, severity: int, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) float32 in [0, 1] and labels (B,) int64 of the given item indices."""


class DigitsCSource:
    """digits-c (or textures-C): a shipped test split corrupted on demand, image by image (see the
    module docstring); `loader` is `load_digits_split` or `sims.data.textures.load_textures_split`."""

    def __init__(self, image_size: int = 32, seed: int = 0, loader=load_digits_split) -> None:
        x, y = loader("test", image_size)
        self.images = x[:, 0].numpy()  # (N, s, s) float32 in [0, 1]; 1.8 MB at 32 px
        self.targets = y.numpy()
        self.seed = int(seed)

    def corruptions(self) -> list[str]:
        return list(CORRUPTIONS)

    def labels(self, corruption: str, severity: int) -> np.ndarray:
        return self.targets

    def load(self, corruption: str, severity: int, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        fn = get_corruption(corruption)
        out = np.empty((len(indices), 1) + self.images.shape[1:], dtype=np.float32)
        with global_numpy_scope():  # save/restore NumPy's global state once per batch, not per image
            for row, index in enumerate(indices):
                rng = np.random.default_rng(corruption_seed(self.seed, corruption, severity, int(index)))
                out[row, 0] = fn(self.images[index], severity, rng)
        return torch.from_numpy(out), torch.from_numpy(self.targets[indices].astype(np.int64))


def digits_c_split(
    corruption: str, severity: int, image_size: int = 32, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole digits-c test split for one corruption and severity: (450, 1, s, s) float32, labels."""
    if severity not in SEVERITIES:
        raise ConfigError(f"severity must be an integer 1..5, got {severity!r}.")
    source = DigitsCSource(image_size, seed)
    return source.load(corruption, severity, np.arange(len(source.targets)))


CIFAR_LAYOUT = (
    "a CIFAR-10-C style folder: <root>/<corruption>.npy, uint8 of shape (5*N, H, W, 3) holding "
    "severities 1..5 in blocks of N images, and <root>/labels.npy with 5*N (or N) integer labels"
)


class CifarCSource:
    """CIFAR-10-C / CIFAR-100-C folder, memory-mapped: only the requested rows are read."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise CheckpointError(f"Expected {CIFAR_LAYOUT}; found no directory at {self.root}.")
        label_path = self.root / "labels.npy"
        found = sorted(p.name for p in self.root.iterdir())[:12]
        if not label_path.is_file():
            raise CheckpointError(f"Expected {CIFAR_LAYOUT}; {self.root} has no labels.npy (found: {found}).")
        self._labels = np.load(label_path, mmap_mode="r", allow_pickle=False)
        if self._labels.ndim != 1 or not np.issubdtype(self._labels.dtype, np.integer):
            raise CheckpointError(
                f"Expected {CIFAR_LAYOUT}; labels.npy holds {self._labels.dtype} "
                f"of shape {self._labels.shape}."
            )
        self._names = sorted(p.stem for p in self.root.glob("*.npy") if p.name != "labels.npy")
        if not self._names:
            raise CheckpointError(
                f"Expected {CIFAR_LAYOUT}; {self.root} holds no <corruption>.npy (found: {found})."
            )

    def corruptions(self) -> list[str]:
        return list(self._names)

    @lru_cache(maxsize=32)  # noqa: B019 - a source lives as long as its stream; handles are small
    def _array(self, corruption: str) -> np.ndarray:
        path = self.root / f"{corruption}.npy"
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"Expected {CIFAR_LAYOUT}; could not read {path}: {exc}") from exc
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[0] % 5:
            raise CheckpointError(
                f"Expected {CIFAR_LAYOUT}; {path.name} holds {arr.dtype} of shape {arr.shape}."
            )
        if len(self._labels) not in (arr.shape[0], arr.shape[0] // 5):
            raise CheckpointError(
                f"Expected {CIFAR_LAYOUT}; labels.npy has {len(self._labels)} labels but {path.name} "
                f"has {arr.shape[0]} images."
            )
        return arr

    def labels(self, corruption: str, severity: int) -> np.ndarray:
        n = self._array(corruption).shape[0] // 5
        start = (severity - 1) * n if len(self._labels) == 5 * n else 0
        return np.asarray(self._labels[start:start + n], dtype=np.int64)

    def load(self, corruption: str, severity: int, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        arr = self._array(corruption)
        n = arr.shape[0] // 5
        # fancy indexing on the memmap reads those rows only
        rows = arr[(severity - 1) * n + np.asarray(indices)]
        x = torch.from_numpy(rows.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
        return x, torch.from_numpy(self.labels(corruption, severity)[indices])


IMAGENET_LAYOUT = (
    "an ImageNet-C style folder: <root>/<corruption>/<severity 1..5>/<class_dir>/<image>.JPEG "
    "(classes indexed in sorted order of class_dir)"
)


class ImageNetCSource:
    """ImageNet-C folder (also Tiny-ImageNet-C): file lists per (corruption, severity), images via PIL."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise CheckpointError(f"Expected {IMAGENET_LAYOUT}; found no directory at {self.root}.")
        self._names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(
            (p / str(s)).is_dir() for s in SEVERITIES))
        if not self._names:
            found = sorted(p.name for p in self.root.iterdir())[:12]
            raise CheckpointError(
                f"Expected {IMAGENET_LAYOUT}; {self.root} has no <corruption>/<severity>/ folders "
                f"(found: {found})."
            )
        self._classes: list[str] | None = None

    def corruptions(self) -> list[str]:
        return list(self._names)

    @lru_cache(maxsize=2)  # noqa: B019 - ImageNet-C has 50 000 files per domain: keep two lists at most
    def _files(self, corruption: str, severity: int) -> tuple[list[str], np.ndarray]:
        folder = self.root / corruption / str(severity)
        if not folder.is_dir():
            raise CheckpointError(f"Expected {IMAGENET_LAYOUT}; missing folder {folder}.")
        classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
        if self._classes is None:
            self._classes = classes
        elif classes != self._classes:
            raise CheckpointError(
                f"Expected {IMAGENET_LAYOUT} with the same class folders in every domain; {folder} has "
                f"{len(classes)} class folders, the first domain read had {len(self._classes)}."
            )
        files: list[str] = []
        labels: list[int] = []
        for label, name in enumerate(classes):
            names = sorted(e.name for e in os.scandir(folder / name)
                           if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
            files.extend(str(folder / name / f) for f in names)
            labels.extend([label] * len(names))
        if not files:
            raise CheckpointError(
                f"Expected {IMAGENET_LAYOUT}; {folder} holds no images ({IMAGE_EXTENSIONS})."
            )
        return files, np.asarray(labels, dtype=np.int64)

    def labels(self, corruption: str, severity: int) -> np.ndarray:
        return self._files(corruption, severity)[1]

    def load(self, corruption: str, severity: int, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        files, labels = self._files(corruption, severity)
        arrays = []
        for index in indices:
            try:
                with Image.open(files[index]) as im:
                    arrays.append(np.asarray(im.convert("RGB")))
            except OSError as exc:
                raise CheckpointError(
                    f"Expected {IMAGENET_LAYOUT}; could not read image {files[index]}: {exc}"
                ) from exc
        if len({a.shape for a in arrays}) > 1:
            raise CheckpointError(
                f"Images of one batch differ in size ({sorted({a.shape for a in arrays})}); "
                "ImageNet-C images "
                "are all 224×224: resize the folder's images to one size first."
            )
        x = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
        return x, torch.from_numpy(labels[np.asarray(indices)])


def make_source(config: CorruptionStreamConfig) -> DomainSource:
    """The source a config names; a folder source checks that every domain is present."""
    if config.source == "digits":
        return DigitsCSource(config.image_size, config.seed)
    if config.source == "textures":
        return DigitsCSource(config.image_size, config.seed, load_textures_split)
    source = CifarCSource(config.root) if config.source == "cifar10c" else ImageNetCSource(config.root)
    available = source.corruptions()
    for name in config.corruptions:
        if name not in available:
            raise ConfigError(
                f"corruption {name!r} is not in the {config.source} folder {config.root}. "
                f"{did_you_mean(name, available)} Found: {', '.join(available)}."
            )
    return source


# ---------------------------------------------------------------------------- orders
def dirichlet_label_order(labels: np.ndarray, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """RoTTA's class-imbalanced order of item indices (see module docstring).

    Each class's items, in dataset order, are cut into S = min(#classes, 100) consecutive chunks of
    sizes given by a Dirichlet(alpha·1_S) draw per class; time slot s collects chunk s of every class
    in a random class order; slots are concatenated. Every item appears exactly once."""
    classes = np.unique(labels)
    num_slots = min(len(classes), MAX_SLOTS)
    proportions = rng.dirichlet([float(alpha)] * num_slots, size=len(classes))
    slots: list[list[np.ndarray]] = [[] for _ in range(num_slots)]
    for cls, share in zip(classes, proportions, strict=True):
        ids = np.flatnonzero(labels == cls)
        cuts = (np.cumsum(share)[:-1] * len(ids)).astype(int)
        for slot, chunk in enumerate(np.split(ids, cuts)):
            slots[slot].append(chunk)
    pieces = [chunks[i] for chunks in slots for i in rng.permutation(len(chunks))]
    return np.concatenate(pieces).astype(np.int64)


class StreamBatch(NamedTuple):
    """One batch of a stream: domain name, domain index, global batch index, images, labels."""

    domain: str
    domain_index: int
    batch_index: int
    x: torch.Tensor
    y: torch.Tensor


# ---------------------------------------------------------------------------- the stream
class CorruptionStream:
    """A continual domain-shift stream: an iterator of `StreamBatch`, computed on demand.

    `len(stream)` is the number of batches; `stream.batch(k)` computes batch k directly;
    `start_at(k)` (or `start_batch=k`) makes the iterator continue from batch k. Only the item
    counts of each domain and the current domain's order (an index array) are kept.
    """

    def __init__(self, config: CorruptionStreamConfig, start_batch: int = 0,
                 source: DomainSource | None = None) -> None:
        if not isinstance(config, CorruptionStreamConfig):
            raise ConfigError(
                f"CorruptionStream takes a CorruptionStreamConfig, got {type(config).__name__}."
            )
        self.config = config
        self.source = source if source is not None else make_source(config)
        self._domain_batches = [self._count_batches(d) for d in range(len(config.corruptions))]
        self._first_batch = np.concatenate([[0], np.cumsum(self._domain_batches)]).astype(np.int64)
        self._cached_order: tuple[int, np.ndarray] | None = None
        self._position = 0
        self.start_at(start_batch)

    def _count_batches(self, domain_index: int) -> int:
        cfg = self.config
        name = cfg.corruptions[domain_index]
        n_items = len(self.source.labels(name, cfg.severity))
        if cfg.batches_per_domain is None:
            return -(-n_items // cfg.batch_size)
        if cfg.batches_per_domain * cfg.batch_size > n_items:
            raise ConfigError(
                f"batches_per_domain={cfg.batches_per_domain} × batch_size={cfg.batch_size} needs "
                f"{cfg.batches_per_domain * cfg.batch_size} items, but domain {name!r} has {n_items}; "
                "lower one of them or set batches_per_domain=None for the whole split."
            )
        return cfg.batches_per_domain

    def __len__(self) -> int:
        return int(self._first_batch[-1])

    @property
    def position(self) -> int:
        """The global index of the batch the iterator yields next (save it to resume)."""
        return self._position

    def start_at(self, batch_index: int) -> CorruptionStream:
        """Continue iteration at global batch `batch_index` (0..len); earlier batches are not computed."""
        if isinstance(batch_index, bool) or not isinstance(batch_index, int | np.integer) \
                or not 0 <= batch_index <= len(self):
            raise ConfigError(f"start batch must be an integer in 0..{len(self)}, got {batch_index!r}.")
        self._position = int(batch_index)
        return self

    def domain_order(self, domain_index: int) -> np.ndarray:
        """Item indices of domain `domain_index` in stream order (truncated to the batches taken)."""
        if self._cached_order is not None and self._cached_order[0] == domain_index:
            return self._cached_order[1]
        cfg = self.config
        labels = self.source.labels(cfg.corruptions[domain_index], cfg.severity)
        rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, domain_index, _ORDER_TAG])
        if cfg.label_shift is None:
            order = rng.permutation(len(labels))
        else:
            order = dirichlet_label_order(labels, cfg.label_shift, rng)
        order = order[: self._domain_batches[domain_index] * cfg.batch_size]
        self._cached_order = (domain_index, order)
        return order

    def locate(self, batch_index: int) -> tuple[int, int]:
        """(domain index, batch index within that domain) of a global batch index."""
        if not 0 <= batch_index < len(self):
            raise ConfigError(f"batch index must be in 0..{len(self) - 1}, got {batch_index!r}.")
        domain = int(np.searchsorted(self._first_batch, batch_index, side="right") - 1)
        return domain, int(batch_index - self._first_batch[domain])

    def batch(self, batch_index: int) -> StreamBatch:
        """Compute global batch `batch_index` from the config alone."""
        domain, local = self.locate(batch_index)
        size = self.config.batch_size
        indices = self.domain_order(domain)[local * size:(local + 1) * size]
        name = self.config.corruptions[domain]
        x, y = self.source.load(name, self.config.severity, indices)
        return StreamBatch(name, domain, int(batch_index), x, y)

    def __iter__(self) -> Iterator[StreamBatch]:
        return self

    def __next__(self) -> StreamBatch:
        if self._position >= len(self):
            raise StopIteration
        out = self.batch(self._position)
        self._position += 1
        return out
