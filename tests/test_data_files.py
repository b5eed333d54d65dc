"""File-backed loaders, fed tiny files written in the real on-disk formats."""

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from raysweep.data import dataset_info, load_dataset


def _cifar_batch(path: Path, images: np.ndarray, labels: list[int], key: str) -> None:
    """A batch as the published files hold it: rows of 3072 bytes, R plane then G then B."""
    entry = {"batch_label": path.name, key: labels, "data": images.reshape(len(labels), -1)}
    path.write_bytes(pickle.dumps(entry, protocol=2))


def _rgb(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def test_cifar10_python_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train = [_rgb(3, seed) for seed in range(5)]
    for i, images in enumerate(train, start=1):
        _cifar_batch(folder / f"data_batch_{i}", images, [i, i + 1, 0], "labels")
    test = _rgb(4, 9)
    _cifar_batch(folder / "test_batch", test, [9, 8, 7, 6], "labels")
    meta = {"label_names": [f"c{k}" for k in range(10)], "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))

    ds = load_dataset("cifar10", "train", data_root=tmp_path)
    assert ds.images.shape == (15, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images, torch.from_numpy(np.concatenate(train)))
    assert ds.labels.tolist() == [v for i in range(1, 6) for v in (i, i + 1, 0)]
    assert ds.info == dataset_info("cifar10") and ds.info.train_size == 50_000
    ds_test = load_dataset("cifar10", "test", data_root=str(tmp_path))
    assert torch.equal(ds_test.images, torch.from_numpy(test))
    assert ds_test.labels.tolist() == [9, 8, 7, 6]


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images = _rgb(2, 3)
    _cifar_batch(folder / "train", images, [99, 42], "fine_labels")
    _cifar_batch(folder / "test", images[:1], [5], "fine_labels")
    ds = load_dataset("cifar100", "train", data_root=tmp_path)
    assert ds.labels.tolist() == [99, 42] and torch.equal(ds.images, torch.from_numpy(images))
    assert ds.info.num_classes == 100


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()

    class Exploit:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    (folder / "train").write_bytes(pickle.dumps({"data": Exploit()}))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        load_dataset("cifar100", "train", data_root=tmp_path)


def _idx(path: Path, array: np.ndarray) -> None:
    """idx format: magic 0x0000 | type 0x08 (uint8) | ndim, big-endian int32 dims, raw bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize(
    ("name", "folder"),
    [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")],
)
def test_mnist_family_idx_files(tmp_path: Path, name: str, folder: str) -> None:
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_x, test_x = rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 256, (2, 28, 28))
    _idx(raw / "train-images-idx3-ubyte", train_x)
    _idx(raw / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 4, 9]))
    _idx(raw / "t10k-images-idx3-ubyte", test_x)
    _idx(raw / "t10k-labels-idx1-ubyte", np.array([7, 3]))
    ds = load_dataset(name, "train", data_root=tmp_path)
    assert ds.images.shape == (6, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images[:, 0], torch.from_numpy(train_x.astype(np.uint8)))
    assert ds.labels.tolist() == [0, 1, 2, 3, 4, 9] and ds.labels.dtype == torch.int64
    ds_test = load_dataset(name, "test", data_root=tmp_path)
    assert ds_test.labels.tolist() == [7, 3]
    assert ds.info.channels == 1 and ds.info.image_size == 28 and ds.info.train_size == 60_000


def test_svhn_mat_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)  # H, W, C, N as published
    scipy.io.savemat(
        tmp_path / "train_32x32.mat", {"X": x, "y": np.array([[10], [1], [2], [10], [9]])}
    )
    ds = load_dataset("svhn", "train", data_root=tmp_path)
    assert ds.images.shape == (5, 3, 32, 32)
    assert ds.labels.tolist() == [0, 1, 2, 0, 9]  # label 10 is digit 0
    assert ds.images[3, 2, 7, 11] == x[7, 11, 2, 3]  # [n, c, h, w] <- [h, w, c, n]
    with pytest.raises(FileNotFoundError, match="svhn"):
        load_dataset("svhn", "test", data_root=tmp_path)


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_image_folder_tree(tmp_path: Path) -> None:
    base = tmp_path / "caltech101"
    _png(base / "train" / "accordion" / "a.png", (255, 0, 0), (300, 260))
    _png(base / "train" / "accordion" / "b.jpg", (250, 0, 0), (260, 300))
    _png(base / "train" / "zebra" / "c.png", (0, 0, 255), (400, 256))
    (base / "train" / "zebra" / "notes.txt").write_text("not an image")
    _png(base / "val" / "zebra" / "d.png", (0, 255, 0), (256, 256))  # no accordion in val

    ds = load_dataset("caltech101", "train", data_root=tmp_path)
    assert ds.images.shape == (3, 3, 224, 224) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [0, 0, 1]
    assert ds.images[0, :, 100, 100].tolist() == [255, 0, 0]
    assert ds.images[2, :, 0, 0].tolist() == [0, 0, 255]
    val = load_dataset("caltech101", "test", data_root=tmp_path)
    assert val.labels.tolist() == [1]  # index fixed by the train folders
    assert val.images[0, :, 50, 50].tolist() == [0, 255, 0]
    assert val.info.num_classes == 101 and val.info.mean == (0.485, 0.456, 0.406)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "kmnist", "svhn", "imagenet"])
def test_missing_files_name_dataset_folder_and_fix(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, "train", data_root=tmp_path)
    msg = str(err.value)
    assert f"'{name}'" in msg and str(tmp_path) in msg and "data_root:" in msg and "\n" not in msg
    with pytest.raises(FileNotFoundError, match="no data_root was given"):
        load_dataset(name, "test")


def test_registry_errors_list_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar11'; valid: shapes, .*cifar10"):
        dataset_info("cifar11")
    with pytest.raises(ValueError, match="valid: train, test"):
        load_dataset("digits", "val")


def test_published_infos() -> None:
    assert dataset_info("imagenet").num_classes == 1000
    assert dataset_info("imagenet").train_size == 1_281_167
    assert dataset_info("svhn").train_size == 73_257
    assert dataset_info("cifar100").num_classes == 100
    assert dataset_info("fashion_mnist").mean == (0.2860,)
    assert not dataset_info("cifar10").builtin
