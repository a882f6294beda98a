"""Unit tests for the dataset layer (``trainpipe_trainer.data``) and ``DataReport``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainpipe_trainer.contract.data_report import DataReport
from trainpipe_trainer.contract.job_config import DataConfig, SplitFractions
from trainpipe_trainer.data import DataSourceError, EpochSampler, SampleDataset, build_datasets
from trainpipe_trainer.data.decode import DecodeError, decode_array
from trainpipe_trainer.data.digits import default_cache_dir, ensure_builtin_digits
from trainpipe_trainer.data.sources import resolve_source
from trainpipe_trainer.data.splits import split_by_class, split_counts
from trainpipe_trainer.data.transforms import build_transform

ALL_AUGMENTATIONS = ["hflip", "crop", "rotation", "colorjitter"]


# ---------------------------------------------------------------- helpers


def write_png(path: Path, seed: int, size: int = 12) -> Path:
    """A random RGB image: distinct seeds give distinct content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def make_tree(root: Path, layout: dict[str, int], start_seed: int = 0) -> None:
    """``layout`` maps 'folder/sub' -> number of PNGs to write there."""
    seed = start_seed
    for folder, count in layout.items():
        for i in range(count):
            write_png(root / folder / f"img{i:03d}.png", seed)
            seed += 1


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    ensure_builtin_digits(cache)
    return cache


def split_paths(bundle) -> dict[str, list[str]]:
    return {
        "train": [str(p) for p in bundle.train.paths],
        "val": [str(p) for p in bundle.val.paths],
        "test": [str(p) for p in bundle.test.paths],
    }


# ---------------------------------------------------------------- builtin digits


def test_builtin_digits_written_once_as_imagefolder(digits_cache: Path) -> None:
    from sklearn.datasets import load_digits

    root = ensure_builtin_digits(digits_cache)
    assert root == digits_cache / "digits-v1"
    pngs = sorted(root.rglob("*.png"))
    assert len(pngs) == 1797
    assert sorted(p.name for p in root.iterdir()) == [str(c) for c in range(10)]
    assert [p.name for p in digits_cache.iterdir()] == ["digits-v1"], "staging folder left behind"

    digits = load_digits()
    first = np.asarray(Image.open(root / str(digits.target[0]) / "0000.png"))
    assert first.shape == (8, 8)
    np.testing.assert_array_equal(first, np.rint(digits.images[0] * 255 / 16).astype(np.uint8))

    old = 1_000_000_000
    for png in pngs:
        os.utime(png, (old, old))
    assert ensure_builtin_digits(digits_cache) == root
    assert all(p.stat().st_mtime == old for p in pngs), "second call rewrote the cache"


def test_default_cache_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINPIPE_CACHE", str(tmp_path / "env"))
    assert default_cache_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert default_cache_dir(None) == tmp_path / "env"
    monkeypatch.delenv("TRAINPIPE_CACHE")
    assert default_cache_dir(None) == Path.home() / ".cache" / "trainpipe" / "datasets"


# ---------------------------------------------------------------- sources


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("builtin:mnist", "is not a known builtin dataset"),
        ("s3://bucket/images", "scheme 's3'"),
        ("", "is empty"),
        ("file://otherhost/data", "must be local"),
    ],
)
def test_bad_source_names_the_field(source: str, fragment: str, tmp_path: Path) -> None:
    with pytest.raises(DataSourceError) as info:
        resolve_source(source, tmp_path)
    message = str(info.value)
    assert message.startswith("data.source: ")
    assert fragment in message
    assert "allowed: builtin:digits" in message
    assert isinstance(info.value, ValueError)


def test_missing_or_non_folder_source(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"data\.source: .*nope.* does not exist"):
        resolve_source(str(tmp_path / "nope"), tmp_path)
    afile = tmp_path / "a.txt"
    afile.write_text("x")
    with pytest.raises(DataSourceError, match=r"data\.source: .*is not a folder"):
        resolve_source(str(afile), tmp_path)
    with pytest.raises(DataSourceError, match=r"data\.source: .*does not exist"):
        build_datasets(DataConfig(source=str(tmp_path / "nope")), seed=0)


def test_file_uri_and_path_resolve(tmp_path: Path) -> None:
    data = tmp_path / "my data"
    data.mkdir()
    assert resolve_source(data.as_uri(), tmp_path) == data
    assert resolve_source(str(data), tmp_path) == data


def test_folder_without_classes_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="holds no class folder"):
        build_datasets(DataConfig(source=str(tmp_path / "empty")), seed=0)


# ---------------------------------------------------------------- splits


def test_split_counts_exact_and_min_one() -> None:
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    for n in range(0, 60):
        counts = split_counts(n, fractions)
        assert sum(counts.values()) == n
        if n >= 3:
            assert counts["val"] >= 1 and counts["test"] >= 1 and counts["train"] >= 1
    assert split_counts(3, fractions) == {"train": 1, "val": 1, "test": 1}
    assert split_counts(100, fractions) == {"train": 80, "val": 10, "test": 10}
    assert split_counts(10, {"train": 0.9, "val": 0.1, "test": 0.0})["test"] == 0


def test_split_by_class_deterministic_and_seed_dependent() -> None:
    by_class = {c: [f"{c}/{i:03d}" for i in range(50)] for c in ("a", "b", "c")}
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    first = split_by_class(by_class, fractions, seed=7)
    assert first == split_by_class(by_class, fractions, seed=7)
    assert first != split_by_class(by_class, fractions, seed=8)
    for c, files in by_class.items():
        parts = [first[s][c] for s in ("train", "val", "test")]
        assert sorted(sum(parts, [])) == sorted(files)
        assert [len(p) for p in parts] == [30, 10, 10]


def test_digits_split_deterministic_exact_and_disjoint(digits_cache: Path) -> None:
    cfg = DataConfig(
        cache_dir=str(digits_cache), split=SplitFractions(train=0.7, val=0.15, test=0.15)
    )
    a = build_datasets(cfg, seed=1)
    again = build_datasets(cfg, seed=1)
    other = build_datasets(cfg, seed=2)

    assert split_paths(a) == split_paths(again)
    assert a.report.split_fingerprint == again.report.split_fingerprint
    assert split_paths(a)["train"] != split_paths(other)["train"]
    assert a.report.split_fingerprint != other.report.split_fingerprint

    paths = split_paths(a)
    everything = paths["train"] + paths["val"] + paths["test"]
    assert len(everything) == len(set(everything)) == 1797
    report = a.report
    assert report.layout == "split" and report.seed == 1
    assert report.classes == [str(c) for c in range(10)]
    assert report.total_samples == 1797
    for split, wanted in {"train": 0.7, "val": 0.15, "test": 0.15}.items():
        assert abs(report.actual_fractions[split] - wanted) <= 0.02
        assert abs(len(paths[split]) / 1797 - wanted) <= 0.02
    assert report.max_fraction_deviation() <= 0.02
    assert report.duplicates_across_splits == []
    assert report.unreadable_files == [] and report.nonfinite_samples == []
    assert report.class_problems == []
    assert a.classes == report.classes
    assert sorted(set(a.train.targets)) == list(range(10))


# ---------------------------------------------------------------- layouts


def test_presplit_layout_detected(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        {
            "train/cat": 4,
            "train/dog": 3,
            "val/cat": 2,
            "val/dog": 1,
            "test/cat": 1,
            "test/dog": 2,
            "val/fox": 2,
        },
    )
    bundle = build_datasets(DataConfig(source=str(tmp_path)), seed=0)
    report = bundle.report
    assert report.layout == "presplit"
    assert report.requested_fractions is None
    assert bundle.classes == ["cat", "dog"]
    assert report.counts == {
        "train": {"cat": 4, "dog": 3},
        "val": {"cat": 2, "dog": 1},
        "test": {"cat": 1, "dog": 2},
    }
    assert [p.parent.parent.name for p in bundle.train.paths] == ["train"] * 7
    assert [p.parent.parent.name for p in bundle.val.paths] == ["val"] * 3
    assert bundle.val.targets == [0, 0, 1]
    unknown = [p for p in report.class_problems if p.kind == "unknown"]
    assert [(p.class_name, p.split) for p in unknown] == [("fox", "val")]
    assert not any("fox" in str(p) for p in bundle.val.paths)


def test_class_folder_named_train_is_not_presplit(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": 5, "other": 5})  # files directly in train/: a class
    bundle = build_datasets(DataConfig(source=str(tmp_path)), seed=0)
    assert bundle.report.layout == "split"
    assert bundle.classes == ["other", "train"]


def test_presplit_without_val_carves_it_from_train(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/a": 10, "train/b": 10, "test/a": 2, "test/b": 2})
    bundle = build_datasets(DataConfig(source=str(tmp_path)), seed=3)
    counts = bundle.report.counts
    assert counts["test"] == {"a": 2, "b": 2}
    assert counts["val"]["a"] >= 1 and counts["val"]["b"] >= 1
    assert sum(counts["train"].values()) + sum(counts["val"].values()) == 20
    assert not set(bundle.train.paths) & set(bundle.val.paths)
    assert any("carved from train/" in note for note in bundle.report.notes)


# ---------------------------------------------------------------- report


def test_report_finds_sample_leaked_across_splits(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/a": 3, "train/b": 3, "val/a": 1, "val/b": 1})
    clean = build_datasets(DataConfig(source=str(tmp_path)), seed=0).report
    assert clean.duplicates_across_splits == []

    # Same pixels, another name and another (lossless) format: only a content hash sees it.
    Image.open(tmp_path / "train/a/img001.png").save(tmp_path / "val/b/renamed.bmp")
    report = build_datasets(DataConfig(source=str(tmp_path)), seed=0).report
    assert len(report.duplicates_across_splits) == 1
    group = report.duplicates_across_splits[0]
    assert {(f.split, f.path) for f in group.files} == {
        ("train", "train/a/img001.png"),
        ("val", "val/b/renamed.bmp"),
    }
    assert len(group.hash) == 64


def test_unreadable_file_listed_and_excluded(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a": 5, "b": 5})
    (tmp_path / "a" / "broken.png").write_bytes(b"this is not a png at all")
    bundle = build_datasets(DataConfig(source=str(tmp_path)), seed=0)
    report = bundle.report
    assert [u.path for u in report.unreadable_files] == ["a/broken.png"]
    assert "broken.png" in report.unreadable_files[0].error
    assert report.files_scanned == 11
    assert report.total_samples == 10
    every = bundle.train.paths + bundle.val.paths + bundle.test.paths
    assert len(every) == 10
    assert tmp_path / "a" / "broken.png" not in every


def test_npy_with_nan_listed_in_nonfinite_samples(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        for i in range(4):
            (tmp_path / cls).mkdir(exist_ok=True)
            np.save(
                tmp_path / cls / f"s{i}.npy", np.full((6, 6), i / 10 + (cls == "b"), np.float32)
            )
    poisoned = np.zeros((6, 6, 3), np.float32)
    poisoned[0, 0, 0] = np.nan
    poisoned[1, 1, 1] = np.nan
    poisoned[2, 2, 2] = np.inf
    np.save(tmp_path / "a" / "poisoned.npy", poisoned)

    report = build_datasets(DataConfig(source=str(tmp_path)), seed=0).report
    assert [(s.path, s.nan_count, s.inf_count) for s in report.nonfinite_samples] == [
        ("a/poisoned.npy", 2, 1)
    ]
    assert report.unreadable_files == []
    assert report.total_samples == 9


def test_decode_shapes_and_errors(tmp_path: Path) -> None:
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((5, 7), 255, np.uint8)).save(gray)
    array = decode_array(gray)
    assert array.shape == (3, 5, 7) and array.dtype == np.float32 and array.max() == 1.0

    np.save(tmp_path / "hwc.npy", np.arange(4 * 5 * 3, dtype=np.float64).reshape(4, 5, 3))
    hwc = decode_array(tmp_path / "hwc.npy")
    assert hwc.shape == (3, 4, 5) and hwc.dtype == np.float32 and hwc[1, 0, 0] == 1.0

    np.save(tmp_path / "chw.npy", np.zeros((3, 4, 5), np.float32))
    with pytest.raises(DecodeError, match=r"chw\.npy.*HxW or HxWxC"):
        decode_array(tmp_path / "chw.npy")
    (tmp_path / "bad.jpg").write_bytes(b"\x00" * 10)
    with pytest.raises(DecodeError, match=r"bad\.jpg: cannot be decoded"):
        decode_array(tmp_path / "bad.jpg")


def test_data_report_roundtrip_and_no_torch(tmp_path: Path) -> None:
    make_tree(tmp_path / "d", {"a": 3, "b": 3})
    report = build_datasets(DataConfig(source=str(tmp_path / "d")), seed=0).report
    out = report.write(tmp_path / "out" / "data_report.json")
    assert DataReport.read(out) == report
    assert [p.name for p in out.parent.iterdir()] == ["data_report.json"]

    code = (
        "import sys, trainpipe_trainer.contract.data_report as m; "
        "assert 'torch' not in sys.modules, 'contract imports torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- transforms and dataset


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("image_size", [8, 28])
def test_transform_output_shape(image_size: int, train: bool) -> None:
    transform = build_transform(image_size, ALL_AUGMENTATIONS, train=train)
    out = transform(torch.rand(3, 10, 7))
    assert out.shape == (3, image_size, image_size)
    assert out.dtype == torch.float32


def test_eval_transform_normalizes_without_randomness() -> None:
    transform = build_transform(16, ALL_AUGMENTATIONS, train=False)
    out = transform(torch.full((3, 8, 8), 0.5))
    assert torch.allclose(out, torch.zeros(3, 16, 16), atol=1e-6)
    with pytest.raises(ValueError, match="data.augment"):
        build_transform(16, ["blur"], train=True)


def _aug_dataset(tmp_path: Path, seed: int = 0) -> SampleDataset:
    files = [write_png(tmp_path / f"{i}.png", i, size=16) for i in range(6)]
    transform = build_transform(16, ALL_AUGMENTATIONS, train=True)
    return SampleDataset([(f, i % 2) for i, f in enumerate(files)], transform, seed=seed)


def test_augmentation_deterministic_per_index_and_epoch(tmp_path: Path) -> None:
    dataset = _aug_dataset(tmp_path)
    torch.manual_seed(123)
    state = torch.get_rng_state()

    first, label = dataset[(2, 5)]
    second, _ = dataset[(2, 5)]
    assert label == 0
    assert torch.equal(first, second)
    assert not torch.equal(first, dataset[(2, 6)][0]), "epochs must see different augmentations"
    assert not torch.equal(first, dataset[(3, 5)][0])
    assert torch.equal(torch.get_rng_state(), state), "__getitem__ changed the global torch RNG"

    dataset.set_epoch(5)
    assert torch.equal(dataset[2][0], first)
    assert dataset.paths[2].name == "2.png" and dataset.targets == [0, 1, 0, 1, 0, 1]


def test_augmentation_independent_of_loader_workers(tmp_path: Path) -> None:
    dataset = _aug_dataset(tmp_path)

    def batches(workers: int) -> list[torch.Tensor]:
        sampler = EpochSampler(range(len(dataset)), epoch=4)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=2, sampler=sampler, num_workers=workers
        )
        return [x for x, _ in loader]

    in_process, with_workers = batches(0), batches(2)
    assert all(torch.equal(a, b) for a, b in zip(in_process, with_workers, strict=True))
    # Resuming mid-epoch: sample 3 alone gives what it gave inside the full pass.
    assert torch.equal(dataset[(3, 4)][0], in_process[1][1])


def test_digits_bundle_yields_normalized_tensors(digits_cache: Path) -> None:
    cfg = DataConfig(cache_dir=str(digits_cache), image_size=16, augment=["hflip", "rotation"])
    bundle = build_datasets(cfg, seed=0)
    x, y = bundle.train[(0, 0)]
    assert x.shape == (3, 16, 16) and 0 <= y < 10
    assert x.min() >= -1.0 - 1e-5 and x.max() <= 1.0 + 1e-5
