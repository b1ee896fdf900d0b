"""digits-c split and continual corruption streams: order, length, resume, label shift, memory, folders."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from methods.errors import CheckpointError, ConfigError, UnknownNameError
from sims.data.digits_c import (
    CorruptionStream,
    CorruptionStreamConfig,
    DigitsCSource,
    digits_c_split,
    dirichlet_label_order,
)

CHEAP = ("brightness", "contrast", "gaussian_noise")  # fast corruptions, for long streams
N_TEST = 450


class SpySource(DigitsCSource):
    """DigitsCSource that records which (domain, first index) batches it computed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loads: list[str] = []

    def load(self, corruption, severity, indices):
        self.loads.append(corruption)
        return super().load(corruption, severity, indices)


def _cfg(**kw) -> CorruptionStreamConfig:
    base = dict(corruptions=CHEAP, severity=3, batch_size=32, image_size=8, seed=0)
    return CorruptionStreamConfig(**(base | kw))


def _fingerprint(stream) -> list[tuple]:
    return [(b.domain, b.domain_index, b.batch_index, b.x.numpy().tobytes(), b.y.numpy().tobytes())
            for b in stream]


def test_stream_order_length_and_contents_match_the_split() -> None:
    stream = CorruptionStream(_cfg())
    per_domain = -(-N_TEST // 32)
    assert len(stream) == 3 * per_domain
    batches = list(stream)
    assert len(batches) == len(stream)
    assert [b.batch_index for b in batches] == list(range(len(stream)))
    assert [b.domain for b in batches] == [c for c in CHEAP for _ in range(per_domain)]
    assert [b.domain_index for b in batches] == [d for d in range(3) for _ in range(per_domain)]
    first = batches[0]
    assert first.x.shape == (32, 1, 8, 8) and first.x.dtype == torch.float32 and first.y.dtype == torch.int64
    assert batches[per_domain - 1].x.shape[0] == N_TEST - 32 * (per_domain - 1)
    assert 0.0 <= float(min(b.x.min() for b in batches)) and float(max(b.x.max() for b in batches)) <= 1.0
    # one domain is the whole digits-c split, each image once, with the same bytes as digits_c_split
    x_split, y_split = digits_c_split("contrast", 3, image_size=8, seed=0)
    order = stream.domain_order(1)
    assert sorted(order.tolist()) == list(range(N_TEST))
    x_dom = torch.cat([b.x for b in batches if b.domain_index == 1])
    y_dom = torch.cat([b.y for b in batches if b.domain_index == 1])
    assert torch.equal(x_dom, x_split[order]) and torch.equal(y_dom, y_split[order])
    with pytest.raises(StopIteration):
        next(stream)


def test_batches_per_domain_and_its_limit() -> None:
    stream = CorruptionStream(_cfg(batches_per_domain=4, batch_size=16))
    assert len(stream) == 12
    assert [b.domain for b in stream] == [c for c in CHEAP for _ in range(4)]
    with pytest.raises(ConfigError, match="needs 480 items"):
        CorruptionStream(_cfg(batches_per_domain=15, batch_size=32))


def test_same_seed_same_bytes_other_seed_other_order() -> None:
    cfg = _cfg(batches_per_domain=2, batch_size=8)
    assert _fingerprint(CorruptionStream(cfg)) == _fingerprint(CorruptionStream(cfg))
    other = CorruptionStreamConfig(**(cfg.to_dict() | {"seed": 1}))
    assert _fingerprint(CorruptionStream(cfg))[0][3] != _fingerprint(CorruptionStream(other))[0][3]


def test_resume_yields_exactly_the_uninterrupted_batches_without_computing_earlier_ones() -> None:
    cfg = _cfg(corruptions=("gaussian_noise", "impulse_noise", "gaussian_noise"), batches_per_domain=4,
               batch_size=8, label_shift=0.5)
    full = _fingerprint(CorruptionStream(cfg))
    assert len(full) == 12
    for k in (0, 1, 5, 8, 11, 12):
        spy = SpySource(8, 0)
        resumed = _fingerprint(CorruptionStream(cfg, source=spy).start_at(k))
        assert resumed == full[k:], f"resume at {k} differs"
        assert len(spy.loads) == 12 - k, "a resumed stream must not compute earlier batches"
    assert _fingerprint(CorruptionStream(cfg, start_batch=7)) == full[7:]
    # interrupt mid-stream, keep only the position, resume in a fresh stream
    first = CorruptionStream(cfg)
    head = [next(first) for _ in range(6)]
    assert first.position == 6
    assert _fingerprint(head) + _fingerprint(CorruptionStream(cfg).start_at(first.position)) == full
    # a repeated corruption gets a new order in its second round, the same image bytes per item
    stream = CorruptionStream(cfg)
    assert not np.array_equal(stream.domain_order(0), stream.domain_order(2))
    with pytest.raises(ConfigError, match="start batch"):
        CorruptionStream(cfg).start_at(13)


def _mean_majority_share(ys: list[torch.Tensor]) -> float:
    return float(np.mean([torch.bincount(y).max().item() / len(y) for y in ys]))


def test_label_shift_imbalances_classes_within_each_domain() -> None:
    balanced = list(CorruptionStream(_cfg(batch_size=16)))
    shifted_stream = CorruptionStream(_cfg(batch_size=16, label_shift=0.1))
    shifted = list(shifted_stream)
    share_bal = _mean_majority_share([b.y for b in balanced])
    share_shift = _mean_majority_share([b.y for b in shifted])
    # balanced batches of 16 from 10 classes: majority share about 0.2-0.3; alpha = 0.1 gives long runs
    assert share_bal < 0.35 < 0.6 < share_shift, (share_bal, share_shift)
    labels = shifted_stream.source.labels("brightness", 3)
    for d in range(3):  # the imbalanced order still visits every item of the domain exactly once
        order = shifted_stream.domain_order(d)
        assert sorted(order.tolist()) == list(range(N_TEST))
        y_dom = torch.cat([b.y for b in shifted if b.domain_index == d])
        np.testing.assert_array_equal(y_dom.numpy(), labels[order])
    assert not np.array_equal(shifted_stream.domain_order(0), shifted_stream.domain_order(1))
    order = dirichlet_label_order(np.repeat(np.arange(5), 20), 0.1, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(100))


def _traced_peak(stream: CorruptionStream) -> tuple[int, int, int]:
    """(batches, items, tracemalloc peak in bytes) of iterating the stream once."""
    next(stream)  # warm up: lazy imports and caches are not the stream's memory
    stream.start_at(0)
    tracemalloc.start()
    try:
        n_batches, n_items = 0, 0
        for batch in stream:
            n_batches += 1
            n_items += batch.x.shape[0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return n_batches, n_items, peak


def test_long_stream_keeps_memory_bounded() -> None:
    """15 domains at 32 px: the iterator's peak is far below the materialised stream and does not
    grow with the stream's length (same peak as a 1-domain stream)."""
    kw = dict(severity=5, batch_size=32, image_size=32, seed=0, batches_per_domain=4)
    long_cfg = CorruptionStreamConfig(corruptions=CHEAP * 5, **kw)
    n_batches, n_items, peak_long = _traced_peak(CorruptionStream(long_cfg))
    assert n_batches == 15 * 4 and n_items == 15 * 4 * 32
    materialised = n_items * 32 * 32 * 4
    _, _, peak_short = _traced_peak(CorruptionStream(CorruptionStreamConfig(corruptions=CHEAP[:1], **kw)))
    assert peak_long < materialised / 10, f"peak {peak_long / 1e6:.2f} MB, stream {materialised / 1e6:.1f} MB"
    assert peak_long < 1.5 * peak_short + 64_000, (peak_long, peak_short)


def test_config_validation_and_round_trip() -> None:
    cfg = _cfg(label_shift=0.1, batches_per_domain=3)
    assert CorruptionStreamConfig(**cfg.to_dict()) == cfg
    assert CorruptionStreamConfig(corruptions=["fog"]).corruptions == ("fog",)
    assert CorruptionStreamConfig(source="cifar10c", root=Path("data")).root == "data"
    bad = [dict(severity=0), dict(severity=2.0), dict(corruptions=()), dict(corruptions="fog"),
           dict(batch_size=0), dict(image_size=12), dict(label_shift=0.0), dict(label_shift="x"),
           dict(batches_per_domain=0), dict(root="/data"), dict(source="cifar10c"), dict(source="cifar"),
           dict(version=2), dict(seed=1.5), dict(corruptions=("fog", 3))]
    for kw in bad:
        with pytest.raises(ConfigError):
            _cfg(**kw)
    with pytest.raises(UnknownNameError, match="gaussian_noise"):
        _cfg(corruptions=("gausian_noise",))


# ------------------------------------------------------------------------------ real folders
def _write_cifar_c(root, names=("fog", "snow"), n=12, size=8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for name in names:
        arrays[name] = rng.integers(0, 256, size=(5 * n, size, size, 3), dtype=np.uint8)
        np.save(root / f"{name}.npy", arrays[name])
    np.save(root / "labels.npy", np.tile(np.arange(n) % 3, 5).astype(np.int64))
    return arrays


def test_cifar_c_folder_reads_the_right_severity_block(tmp_path) -> None:
    arrays = _write_cifar_c(tmp_path)
    cfg = CorruptionStreamConfig(corruptions=("snow", "fog"), severity=3, batch_size=5, seed=0,
                                 source="cifar10c", root=str(tmp_path))
    stream = CorruptionStream(cfg)
    assert len(stream) == 2 * 3
    assert isinstance(stream.source._array("snow"), np.memmap)
    batches = list(stream)
    assert batches[0].x.shape == (5, 3, 8, 8) and batches[0].x.dtype == torch.float32
    for d, name in enumerate(("snow", "fog")):
        x = torch.cat([b.x for b in batches if b.domain_index == d])
        y = torch.cat([b.y for b in batches if b.domain_index == d])
        order = stream.domain_order(d)
        expected = arrays[name][24:36][order].transpose(0, 3, 1, 2).astype(np.float32) / 255
        np.testing.assert_array_equal(x.numpy(), expected)
        np.testing.assert_array_equal(y.numpy(), order % 3)
    assert _fingerprint(CorruptionStream(cfg).start_at(4)) == _fingerprint(batches[4:])


def test_cifar_c_folder_errors_say_what_was_expected(tmp_path) -> None:
    def stream(name: str, root=tmp_path) -> CorruptionStream:
        cfg = CorruptionStreamConfig(corruptions=(name,), source="cifar10c", root=str(root))
        return CorruptionStream(cfg)

    with pytest.raises(CheckpointError, match="CIFAR-10-C style folder.*no directory"):
        stream("fog", tmp_path / "missing")
    np.save(tmp_path / "fog.npy", np.zeros((10, 8, 8, 3), np.uint8))
    with pytest.raises(CheckpointError, match="no labels.npy"):
        stream("fog")
    np.save(tmp_path / "labels.npy", np.zeros(10, np.int64))
    np.save(tmp_path / "snow.npy", np.zeros((10, 8, 8), np.float32))
    with pytest.raises(CheckpointError, match="snow.npy holds float32"):
        stream("snow")
    with pytest.raises(ConfigError, match="Found: fog, snow"):
        stream("frost")


def _write_imagenet_c(root, names=("fog", "snow"), severities=(1, 3), classes=("n01", "n02", "n03")):
    rng = np.random.default_rng(0)
    for name in names:
        for sev in severities:
            for cls in classes:
                folder = root / name / str(sev) / cls
                folder.mkdir(parents=True)
                for i in range(2):
                    pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / f"img{i}.JPEG", quality=90)


def test_imagenet_c_folder_is_read_lazily_with_sorted_class_indices(tmp_path) -> None:
    _write_imagenet_c(tmp_path)
    cfg = CorruptionStreamConfig(corruptions=("fog", "snow", "fog"), severity=3, batch_size=4, seed=0,
                                 source="imagenetc", root=str(tmp_path))
    stream = CorruptionStream(cfg)
    assert len(stream) == 3 * 2  # 6 images per domain, batches of 4 and 2
    batches = list(stream)
    assert batches[0].x.shape == (4, 3, 16, 16) and batches[1].x.shape == (2, 3, 16, 16)
    files, labels = stream.source._files("snow", 3)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2] and "n02" in files[2]
    order = stream.domain_order(1)
    x = torch.cat([b.x for b in batches if b.domain_index == 1])
    for row, index in enumerate(order):
        with Image.open(files[index]) as im:
            expected = np.asarray(im.convert("RGB")).transpose(2, 0, 1).astype(np.float32) / 255
        np.testing.assert_array_equal(x[row].numpy(), expected)
    assert _fingerprint(CorruptionStream(cfg, start_batch=3)) == _fingerprint(batches[3:])


def test_imagenet_c_folder_errors_say_what_was_expected(tmp_path) -> None:
    def stream(sev=3, names=("fog",)):
        return CorruptionStream(CorruptionStreamConfig(corruptions=names, severity=sev, source="imagenetc",
                                                       root=str(tmp_path)))

    with pytest.raises(CheckpointError, match=r"<corruption>/<severity>/ folders"):
        stream()
    _write_imagenet_c(tmp_path)
    with pytest.raises(CheckpointError, match="missing folder"):
        stream(sev=5)
    with pytest.raises(ConfigError, match="Did you mean 'snow'"):
        stream(names=("snw",))
    (tmp_path / "snow" / "3" / "n04").mkdir()
    with pytest.raises(CheckpointError, match="same class folders"):
        stream(names=("fog", "snow"))
