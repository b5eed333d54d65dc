"""Issue #15: Terzi et al.'s fine-grained targets, fed tiny copies of their official layouts.

Each fake holds a few solid-colour images, one colour per file, so a decoded image says which
file it came from: the tests check that every file lands in its split with its label.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from raysweep.data import dataset_info, dataset_names, load_dataset
from raysweep.data.finegrained import FINEGRAINED

NAMES = ("aircraft", "birds", "cars", "dogs", "flowers", "indoor", "cinic10_imagenet")
RED, GREEN, BLUE = (220, 20, 20), (20, 220, 20), (20, 20, 220)
YELLOW, CYAN, MAGENTA = (220, 220, 20), (20, 220, 220), (220, 20, 220)


def _jpg(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (300, 260)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG", quality=95)


def _text(path: Path, lines: list[str], newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(newline.join(lines + [""]).encode())


def _assert_colours(images: torch.Tensor, colours: list[tuple[int, int, int]]) -> None:
    """Centre pixel of each decoded image vs the solid colour its file was written with."""
    assert images.shape == (len(colours), 3, 224, 224) and images.dtype == torch.uint8
    centre = images[:, :, 112, 112].to(torch.int64)
    assert torch.allclose(centre, torch.tensor(colours), atol=8), centre.tolist()


# ---- fakes in the published layouts ----------------------------------------------------------


def _fake_aircraft(root: Path) -> None:
    data = root / "fgvc-aircraft-2013b" / "data"
    _text(data / "variants.txt", ["707-320", "A300B4", "Cessna 172"])  # names may hold spaces
    trainval = {"0034309": ("A300B4", RED), "0056978": ("707-320", GREEN)}
    trainval["1004327"] = ("Cessna 172", BLUE)
    test = {"0062765": ("Cessna 172", YELLOW), "2229435": ("707-320", CYAN)}
    for subset, images in (("trainval", trainval), ("test", test)):
        _text(data / f"images_variant_{subset}.txt", [f"{i} {v}" for i, (v, _) in images.items()])
        for image_id, (_, colour) in images.items():
            _jpg(data / "images" / f"{image_id}.jpg", colour)
    # the family/manufacturer lists of the archive; the variant level must not read them
    _text(data / "images_family_trainval.txt", ["0034309 A300"])


def _fake_birds(root: Path) -> None:
    base = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    _text(base / "classes.txt", [f"{i} {c}" for i, c in enumerate(classes, start=1)])
    images = [  # id, class id (1-based), is_training_image, colour
        (1, 1, 1, RED),
        (2, 1, 0, GREEN),
        (3, 3, 1, BLUE),
        (4, 2, 0, YELLOW),
        (5, 2, 1, CYAN),
    ]
    files = {
        i: f"{classes[c - 1]}/{classes[c - 1][4:]}_{i:04d}_{100 + i}.jpg" for i, c, _, _ in images
    }
    _text(base / "images.txt", [f"{i} {files[i]}" for i, *_ in images])
    _text(base / "image_class_labels.txt", [f"{i} {c}" for i, c, _, _ in images])
    _text(base / "train_test_split.txt", [f"{i} {t}" for i, _, t, _ in images])
    for i, _, _, colour in images:
        _jpg(base / "images" / files[i], colour, (500, 375))


def _cars_annotations(entries: list[tuple[str, int]]) -> np.ndarray:
    """The devkit's 1 x N struct array: bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname."""
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    records = np.zeros((1, len(entries)), dtype=[(f, "O") for f in fields])
    for i, (fname, label) in enumerate(entries):
        records[0, i] = (
            np.array([[5]], np.uint8),
            np.array([[6]], np.uint8),
            np.array([[200]], np.uint8),
            np.array([[150]], np.uint8),
            np.array([[label]], np.uint8),
            fname,
        )
    return records


def _fake_cars(root: Path) -> None:
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]
    meta = {"class_names": np.array(names, dtype=object).reshape(1, -1)}
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", meta, do_compression=False)
    train = [("00001.jpg", 3, RED), ("00002.jpg", 1, GREEN), ("00003.jpg", 3, BLUE)]
    test = [("00001.jpg", 2, YELLOW), ("00002.jpg", 1, CYAN)]  # same names, other folder
    for split, entries in (("train", train), ("test", test)):
        for fname, _, colour in entries:
            _jpg(base / f"cars_{split}" / fname, colour, (400, 300))
    annos = {"annotations": _cars_annotations([(f, c) for f, c, _ in train])}
    scipy.io.savemat(base / "devkit" / "cars_train_annos.mat", annos)
    annos = {"annotations": _cars_annotations([(f, c) for f, c, _ in test])}
    scipy.io.savemat(base / "cars_test_annos_withlabels.mat", annos)


def _dogs_list(path: Path, entries: list[tuple[str, int, tuple[int, int, int]]]) -> None:
    """A list as lists.tar holds it: N x 1 cells of paths and annotations, N x 1 double labels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files = np.array([f for f, _, _ in entries], dtype=object).reshape(-1, 1)
    labels = np.array([[float(c)] for _, c, _ in entries])
    annotations = np.array([f[:-4] for f, _, _ in entries], dtype=object).reshape(-1, 1)
    scipy.io.savemat(path, {"file_list": files, "annotation_list": annotations, "labels": labels})
    for fname, _, colour in entries:
        _jpg(path.parents[1 if path.parent.name == "lists" else 0] / "Images" / fname, colour)


DOGS_TRAIN = [
    ("n02085620-Chihuahua/n02085620_5927.jpg", 1, RED),
    ("n02085782-Japanese_spaniel/n02085782_2.jpg", 2, GREEN),
    ("n02085620-Chihuahua/n02085620_10074.jpg", 1, BLUE),
]
DOGS_TEST = [("n02085936-Maltese_dog/n02085936_37.jpg", 3, YELLOW)]


def _fake_dogs(root: Path) -> None:
    base = root / "stanford_dogs"
    _dogs_list(base / "lists" / "train_list.mat", DOGS_TRAIN)
    _dogs_list(base / "lists" / "test_list.mat", DOGS_TEST)


def _fake_flowers(root: Path) -> None:
    base = root / "flowers-102"
    colours = [RED, GREEN, BLUE, YELLOW, CYAN, MAGENTA]
    for number, colour in enumerate(colours, start=1):
        _jpg(base / "jpg" / f"image_{number:05d}.jpg", colour, (500, 667))
    labels = np.array([[77.0, 1.0, 102.0, 1.0, 77.0, 2.0]])  # 1 x N, 1-based, by image number
    scipy.io.savemat(base / "imagelabels.mat", {"labels": labels})
    setid = {"trnid": np.array([[6, 1]]), "valid": np.array([[3]]), "tstid": np.array([[2, 4, 5]])}
    scipy.io.savemat(base / "setid.mat", {k: v.astype(np.float64) for k, v in setid.items()})


def _fake_indoor(root: Path) -> None:
    base = root / "indoorCVPR_09"
    train = [("kitchen/int474.jpg", RED), ("bar/bar_0001.jpg", GREEN), ("kitchen/k_2.jpg", BLUE)]
    test = [("airport_inside/airport_inside_0001.jpg", YELLOW), ("bar/bar_0002.jpg", CYAN)]
    for entries, listing in ((train, "TrainImages.txt"), (test, "TestImages.txt")):
        _text(base / listing, [f for f, _ in entries], newline="\r\n")  # as published
        for fname, colour in entries:
            _jpg(base / "Images" / fname, colour, (256, 300))
    _jpg(base / "Images" / "kitchen" / "unlisted.jpg", MAGENTA)  # in neither list: not loaded


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _cinic_pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def _fake_cinic(root: Path) -> None:
    base = root / "CINIC-10"
    _png(base / "train" / "airplane" / "n02691156_1012.png", _cinic_pixels(1))
    _png(base / "train" / "airplane" / "cifar10-train-10008.png", _cinic_pixels(2))
    _png(base / "train" / "airplane" / "n02690373_9.png", _cinic_pixels(3))
    _png(base / "train" / "truck" / "n03345487_20.png", _cinic_pixels(4))
    _png(base / "train" / "truck" / "cifar10-train-1.png", _cinic_pixels(5))
    _png(base / "test" / "cat" / "cifar10-test-3.png", _cinic_pixels(6))
    _png(base / "test" / "cat" / "n02123045_7.png", _cinic_pixels(7)[..., 0])  # greyscale
    _png(base / "valid" / "dog" / "n02085620_1.png", _cinic_pixels(8))  # valid/ is not used


FAKES: dict[str, Callable[[Path], None]] = {
    "aircraft": _fake_aircraft,
    "birds": _fake_birds,
    "cars": _fake_cars,
    "dogs": _fake_dogs,
    "flowers": _fake_flowers,
    "indoor": _fake_indoor,
    "cinic10_imagenet": _fake_cinic,
}


def _load(name: str, root: Path) -> tuple:
    train = load_dataset(name, "train", data_root=root, download=False)
    test = load_dataset(name, "test", data_root=root, download=False)
    assert train.info == test.info == dataset_info(name)
    return train, test


# ---- loads -----------------------------------------------------------------------------------


def test_aircraft_variant_lists(tmp_path: Path) -> None:
    _fake_aircraft(tmp_path)
    train, test = _load("aircraft", tmp_path)
    assert train.labels.tolist() == [1, 0, 2]  # line of variants.txt
    _assert_colours(train.images, [RED, GREEN, BLUE])
    assert test.labels.tolist() == [2, 0]
    _assert_colours(test.images, [YELLOW, CYAN])


def test_birds_split_by_train_test_split(tmp_path: Path) -> None:
    _fake_birds(tmp_path)
    train, test = _load("birds", tmp_path)
    assert train.labels.tolist() == [0, 2, 1]  # images 1, 3, 5: class id - 1
    _assert_colours(train.images, [RED, BLUE, CYAN])
    assert test.labels.tolist() == [0, 1]  # images 2, 4
    _assert_colours(test.images, [GREEN, YELLOW])


def test_cars_devkit_annotations(tmp_path: Path) -> None:
    _fake_cars(tmp_path)
    train, test = _load("cars", tmp_path)
    assert train.labels.tolist() == [2, 0, 2]
    _assert_colours(train.images, [RED, GREEN, BLUE])
    assert test.labels.tolist() == [1, 0]
    _assert_colours(test.images, [YELLOW, CYAN])


def test_dogs_mat_lists(tmp_path: Path) -> None:
    _fake_dogs(tmp_path)
    train, test = _load("dogs", tmp_path)
    assert train.labels.tolist() == [0, 1, 0]
    _assert_colours(train.images, [RED, GREEN, BLUE])
    assert test.labels.tolist() == [2]  # a single entry: squeezed to a scalar by loadmat
    _assert_colours(test.images, [YELLOW])


def test_dogs_lists_extracted_flat(tmp_path: Path) -> None:
    base = tmp_path / "stanford_dogs"
    _dogs_list(base / "train_list.mat", DOGS_TRAIN)  # lists.tar holds no folder
    train = load_dataset("dogs", "train", data_root=tmp_path)
    assert train.labels.tolist() == [0, 1, 0]


def test_flowers_train_is_trnid_plus_valid(tmp_path: Path) -> None:
    _fake_flowers(tmp_path)
    train, test = _load("flowers", tmp_path)
    assert train.labels.tolist() == [1, 76, 101]  # images 6, 1 (trnid) then 3 (valid)
    _assert_colours(train.images, [MAGENTA, RED, BLUE])
    assert test.labels.tolist() == [0, 0, 76]  # images 2, 4, 5
    _assert_colours(test.images, [GREEN, YELLOW, CYAN])


def test_indoor_lists_and_sorted_categories(tmp_path: Path) -> None:
    _fake_indoor(tmp_path)
    train, test = _load("indoor", tmp_path)
    # categories of both lists, sorted: airport_inside 0 (test only), bar 1, kitchen 2
    assert train.labels.tolist() == [2, 1, 2]
    _assert_colours(train.images, [RED, GREEN, BLUE])
    assert test.labels.tolist() == [0, 1]
    _assert_colours(test.images, [YELLOW, CYAN])


def test_cinic_keeps_only_imagenet_images(tmp_path: Path) -> None:
    _fake_cinic(tmp_path)
    train, test = _load("cinic10_imagenet", tmp_path)
    assert train.images.shape == (3, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 0, 9]  # CIFAR-10 indices: airplane 0, truck 9
    # files sorted by name within a class; the cifar10-* files (seeds 2, 5) are dropped
    expected = np.stack([_cinic_pixels(s) for s in (3, 1, 4)]).transpose(0, 3, 1, 2)
    assert torch.equal(train.images, torch.from_numpy(expected))
    assert test.labels.tolist() == [3]  # cat
    grey = torch.from_numpy(_cinic_pixels(7)[..., 0])
    assert all(torch.equal(test.images[0, c], grey) for c in range(3))


# ---- facts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "classes", "train_size", "size"),
    [
        ("aircraft", 100, 6_667, 224),
        ("birds", 200, 5_994, 224),
        ("cars", 196, 8_144, 224),
        ("dogs", 120, 12_000, 224),
        ("flowers", 102, 2_040, 224),
        ("indoor", 67, 5_360, 224),
        ("cinic10_imagenet", 10, 70_000, 32),
    ],
)
def test_catalog_facts(name: str, classes: int, train_size: int, size: int) -> None:
    info = dataset_info(name)
    assert (info.num_classes, info.train_size, info.image_size) == (classes, train_size, size)
    assert info.channels == 3 and not info.builtin and name in dataset_names()
    if name == "cinic10_imagenet":
        assert info.mean == (0.47889522, 0.47227842, 0.43047404)
        assert info.std == (0.24205776, 0.23828046, 0.25874835)
    else:
        assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)


def test_every_new_name_is_loaded_by_finegrained() -> None:
    assert FINEGRAINED == set(NAMES) == set(FAKES)
    assert len(dataset_names()) == len(set(dataset_names()))


# ---- errors ----------------------------------------------------------------------------------

DOWNLOADABLE = {"aircraft", "flowers"}


def _assert_one_line(msg: str, name: str, folder: Path, missing: str) -> None:
    assert f"dataset '{name}' not found in {folder} (no {missing})" in msg, msg
    assert "data_root:" in msg and "\n" not in msg
    if name in DOWNLOADABLE:
        assert "download: true" in msg
    else:
        assert "cannot be downloaded automatically" in msg and "http" in msg


@pytest.mark.parametrize(
    ("name", "folder", "removed"),
    [
        ("aircraft", "fgvc-aircraft-2013b", "data/variants.txt"),
        ("birds", "CUB_200_2011", "train_test_split.txt"),
        ("cars", "stanford_cars", "devkit/cars_meta.mat"),
        ("dogs", "stanford_dogs", "lists/train_list.mat"),
        ("flowers", "flowers-102", "setid.mat"),
        ("indoor", "indoorCVPR_09", "TestImages.txt"),
        ("cinic10_imagenet", "CINIC-10", "train"),
    ],
)
def test_missing_file_is_one_line(tmp_path: Path, name: str, folder: str, removed: str) -> None:
    FAKES[name](tmp_path)
    path = tmp_path / folder / removed
    if path.is_dir():
        for child in sorted(path.rglob("*"), reverse=True):
            child.unlink() if child.is_file() else child.rmdir()
        path.rmdir()
    else:
        path.unlink()
    missing = "train_list.mat" if name == "dogs" else removed  # flat is the fallback named
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, "train", data_root=tmp_path)
    _assert_one_line(str(err.value), name, tmp_path / folder, missing)


@pytest.mark.parametrize("name", NAMES)
def test_empty_root_names_folder_and_fix(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, "test", data_root=tmp_path)
    msg = str(err.value)
    assert f"dataset '{name}' not found in {tmp_path}/" in msg and "\n" not in msg
    with pytest.raises(FileNotFoundError, match="no data_root was given") as err:
        load_dataset(name, "test")
    assert ("download: true" in str(err.value)) == (name in DOWNLOADABLE)


@pytest.mark.parametrize("name", sorted(set(NAMES) - DOWNLOADABLE))
def test_download_of_an_undownloadable_dataset_points_to_its_page(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(FileNotFoundError, match="cannot be downloaded automatically") as err:
        load_dataset(name, "train", data_root=tmp_path, download=True)
    assert "http" in str(err.value) and "\n" not in str(err.value)


def test_listed_image_absent(tmp_path: Path) -> None:
    _fake_birds(tmp_path)
    image = next((tmp_path / "CUB_200_2011" / "images").rglob("*_0003_*.jpg"))
    image.unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("birds", "train", data_root=tmp_path)
    msg = str(err.value)
    assert f"{image} is listed in" in msg and "images.txt but absent" in msg and "\n" not in msg


def test_listed_image_absent_through_torchvision(tmp_path: Path) -> None:
    _fake_cars(tmp_path)
    image = tmp_path / "stanford_cars" / "cars_test" / "00002.jpg"
    image.unlink()
    with pytest.raises(FileNotFoundError, match=f"'cars': {image} is listed in"):
        load_dataset("cars", "test", data_root=tmp_path)


def test_labels_beyond_the_class_count_fail(tmp_path: Path) -> None:
    _fake_birds(tmp_path)
    _text(
        tmp_path / "CUB_200_2011" / "image_class_labels.txt", ["1 201", "2 1", "3 1", "4 1", "5 1"]
    )
    with pytest.raises(ValueError, match="class index 200 .* 'birds' has 200 classes"):
        load_dataset("birds", "train", data_root=tmp_path)


def test_cinic_rejects_foreign_class_folders(tmp_path: Path) -> None:
    _fake_cinic(tmp_path)
    _png(tmp_path / "CINIC-10" / "test" / "Cat" / "n02123045_8.png", _cinic_pixels(9))
    with pytest.raises(ValueError, match=r"class folders \['Cat'\]"):
        load_dataset("cinic10_imagenet", "test", data_root=tmp_path)
