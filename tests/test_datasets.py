"""The datasets the agent paints: real files, real fonts and real photos, no mocks."""

import hashlib
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from envs import PaintEnv
from spiral.datasets import DATASETS, load_dataset

LIMIT = 6


def border(images: np.ndarray) -> np.ndarray:
    """The pixels of the outermost two rows and columns of every image."""
    return np.concatenate([images[:, :2].ravel(), images[:, -2:].ravel(), images[:, :, :2].ravel(),
                           images[:, :, -2:].ravel()])


def digest(image: np.ndarray) -> bytes:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest()


@pytest.mark.parametrize("size", [(40, 56), 64])
@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_gives_uint8_rgb_images_of_the_canvas_size(name, size):
    dataset = load_dataset(name, size, limit=LIMIT)
    height, width = (size, size) if isinstance(size, int) else size
    for images, labels in ((dataset.train, dataset.labels_train), (dataset.test, dataset.labels_test)):
        assert images.shape == (LIMIT, height, width, 3)
        assert images.dtype == np.uint8
        assert all(image.std() > 2 for image in images), "a blank image"
        if dataset.num_classes is None:
            assert labels is None
        else:
            assert labels.dtype == np.int64 and labels.shape == (LIMIT,)
            assert labels.min() >= 0 and labels.max() < dataset.num_classes


def test_mnist_keeps_its_own_split_and_no_test_digit_is_a_training_digit():
    dataset = load_dataset("mnist", 28)  # MNIST's own size: the pixels as published
    assert (len(dataset.train), len(dataset.test), dataset.num_classes) == (60_000, 10_000, 10)
    assert set(dataset.labels_train) == set(dataset.labels_test) == set(range(10))
    training = {digest(image) for image in dataset.train[..., 0]}
    assert not any(digest(image) in training for image in dataset.test[..., 0])


def test_fashion_mnist_keeps_its_own_split():
    dataset = load_dataset("fashion-mnist", 28, limit=2_000)
    training = {digest(image) for image in dataset.train[..., 0]}
    assert not any(digest(image) in training for image in dataset.test[..., 0])
    assert dataset.num_classes == 10 and set(dataset.labels_test) == set(range(10))


def test_glyph_test_characters_are_never_training_characters():
    dataset = load_dataset("glyphs", 16, limit=3_000)
    train, test = set(dataset.labels_train), set(dataset.labels_test)
    assert not train & test
    assert dataset.num_classes > 1_000, "far fewer characters than the 1,189 of Debian 12's fonts: are fonts missing?"
    assert 0.1 < len(test) / (len(train) + len(test)) < 0.3


def test_photo_test_crops_come_from_photos_never_cropped_for_training():
    dataset = load_dataset("photos", 16, color=True, limit=300)
    train, test = set(dataset.labels_train), set(dataset.labels_test)
    assert not train & test
    assert len(test) == 3 and len(train) >= 10 and dataset.num_classes == 15


def test_lfw_holds_only_its_faces_split_80_20():
    dataset = load_dataset("lfw", 25)
    assert (len(dataset.train), len(dataset.test)) == (80, 20)
    assert not {digest(image) for image in dataset.train} & {digest(image) for image in dataset.test}


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "glyphs"])
def test_white_on_black_unless_inverted(name):
    dataset = load_dataset(name, 48, limit=50)
    inverted = load_dataset(name, 48, limit=50, invert=True)
    limit = 5 if name == "mnist" else 30  # garments may touch the frame
    assert border(dataset.train).mean() < limit and border(dataset.test).mean() < limit
    assert border(inverted.train).mean() > 255 - limit
    np.testing.assert_array_equal(inverted.test, 255 - dataset.test)


def test_colour_only_when_asked_and_greyscale_sources_repeated():
    grey, colour = load_dataset("photos", 32, limit=40), load_dataset("photos", 32, limit=40, color=True)
    assert all((image == image[..., :1]).all() for image in grey.train)
    assert any((image != image[..., :1]).any() for image in colour.train)
    digits = load_dataset("mnist", 32, limit=10, color=True)
    assert (digits.train == digits.train[..., :1]).all()


@pytest.mark.parametrize("name", ["mnist", "glyphs", "photos"])
def test_the_same_seed_gives_the_same_images_and_a_limit_a_prefix(name):
    first = load_dataset(name, 32, limit=8, seed=3)
    again = load_dataset(name, 32, limit=8, seed=3)
    longer = load_dataset(name, 32, limit=20, seed=3)
    other = load_dataset(name, 32, limit=8, seed=4)
    np.testing.assert_array_equal(first.train, again.train)
    np.testing.assert_array_equal(first.test, longer.test[:8])
    np.testing.assert_array_equal(first.labels_train, longer.labels_train[:8])
    assert not np.array_equal(first.train, other.train)


@pytest.mark.parametrize("size", [64, 16, (40, 56), (56, 40), (5, 90)])  # enlarged, shrunk, padded either way
def test_digits_are_padded_all_at_once_pixel_for_pixel_as_pillow_pads_each(size):
    """_pad_all resamples every digit in two batched passes; the pixels must be ImageOps.pad's, one by one."""
    from spiral.datasets import _mnist_arrays, _resampling

    loaded = load_dataset("mnist", size, limit=40)
    (digits, _), _ = _mnist_arrays()
    order = np.random.default_rng([0, 0]).permutation(len(digits))[:40]  # load_dataset's shuffle of the split
    height, width = (size, size) if isinstance(size, int) else size
    scale = min(width / 28, height / 28)
    method = _resampling((28, 28), (round(28 * scale), round(28 * scale)))
    assert method == (Image.Resampling.LANCZOS if size in (16, (5, 90)) else Image.Resampling.BICUBIC)
    expected = [np.asarray(ImageOps.pad(Image.fromarray(digits[i]), (width, height), method, color=0)) for i in order]
    np.testing.assert_array_equal(loaded.train[..., 0], np.stack(expected))


def test_images_are_read_only():
    dataset = load_dataset("photos", 16, color=True, limit=2)
    with pytest.raises(ValueError):
        dataset.train[0, 0, 0, 0] = 1


def test_samplers_draw_from_their_own_split_pickle_and_feed_the_environment():
    dataset = load_dataset("glyphs", (40, 56), limit=LIMIT)
    rng = np.random.default_rng(0)
    train, test = {digest(image) for image in dataset.train}, {digest(image) for image in dataset.test}
    assert all(digest(dataset.sampler("train")(rng)) in train for _ in range(20))
    assert all(digest(dataset.sampler("test")(rng)) in test for _ in range(20))
    with pytest.raises(ValueError, match="train.*test"):
        dataset.sampler("validation")
    env = PaintEnv(canvas_size=(40, 56), target_source=pickle.loads(pickle.dumps(dataset.sampler("test"))))
    observation, _ = env.reset(seed=0)
    assert digest(observation["target"]) in test
    env = PaintEnv(canvas_size=(40, 56), target_source=dataset.train)
    assert digest(env.reset(seed=0)[0]["target"]) in train


def test_an_unknown_name_or_a_bad_argument_is_refused_with_the_choices():
    with pytest.raises(ValueError) as error:
        load_dataset("cifar10")
    assert all(name in str(error.value) for name in (*DATASETS, "folder:"))
    for size in (0, (64,), (64, -1), 6.4, "64"):
        with pytest.raises(ValueError, match="size"):
            load_dataset("lfw", size)
    with pytest.raises(ValueError, match="limit"):
        load_dataset("lfw", limit=0)


# --- folders of the user's own images ---------------------------------------------------------------------

def grey_file(folder: Path, name: str, level: int, size=(30, 20)) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, level).save(path)
    return path


def levels(images: np.ndarray) -> set[int]:
    """The uniform grey level of each image (the files below are one level each)."""
    return {round(float(image.mean())) for image in images}


def test_a_folder_loads_every_format_skips_broken_files_and_counts_them(tmp_path):
    (tmp_path / "photos" / "deeper").mkdir(parents=True)
    Image.new("RGB", (80, 50), (200, 30, 30)).save(tmp_path / "red.png")
    Image.new("RGB", (64, 64), (30, 200, 30)).save(tmp_path / "photos" / "green.JPG", format="JPEG")
    Image.new("RGB", (90, 40), (30, 30, 200)).save(tmp_path / "photos" / "deeper" / "blue.webp")
    frames = [Image.new("RGB", (20, 20), (250, 250, 0)), Image.new("RGB", (20, 20), (0, 0, 250))]
    frames[0].save(tmp_path / "animation.gif", save_all=True, append_images=frames[1:])
    Image.new("L", (33, 33), 90).save(tmp_path / "grey.bmp")
    Image.new("RGB", (50, 60), (120, 120, 120)).save(tmp_path / "scan.tiff")
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(tmp_path / "transparent.png")
    Image.fromarray(np.full((20, 20), 0x8000, np.uint16)).save(tmp_path / "sixteen-bit.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image, so neither loaded nor counted")

    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        dataset = load_dataset(f"folder:{tmp_path}", (24, 32), color=True)
    images = np.concatenate([dataset.train, dataset.test])
    assert images.shape == (8, 24, 32, 3) and dataset.labels_train is None and dataset.num_classes is None
    colours = [np.round(image.reshape(-1, 3).mean(axis=0)) for image in images]

    def found(colour, tolerance=0):  # JPEG and WebP are lossy
        return any(np.abs(mean - colour).max() <= tolerance for mean in colours)

    assert found((200, 30, 30)) and found((90, 90, 90)) and found((120, 120, 120))
    assert found((30, 200, 30), 4) and found((30, 30, 200), 4)
    assert found((250, 250, 0), 2) and not found((0, 0, 250), 2), "a GIF's first frame, not its last"
    assert found((255, 255, 255)), "transparent pixels become white"
    assert found((128, 128, 128)), "16-bit greyscale scaled to 8 bits, not clipped"


def test_a_folder_split_is_one_in_ten_and_stays_put_when_files_are_added(tmp_path):
    for index in range(40):
        grey_file(tmp_path, f"a/{index:02d}.png", 3 * index)
    before = load_dataset(f"folder:{tmp_path}", 16)
    for index in range(40, 80):
        grey_file(tmp_path, f"b/{index:02d}.png", 3 * index)
    after = load_dataset(f"folder:{tmp_path}", 16)
    assert len(after.train) + len(after.test) == 80 and 2 <= len(after.test) <= 16
    assert levels(before.train) <= levels(after.train) and levels(before.test) <= levels(after.test)
    assert not levels(after.train) & levels(after.test)


def test_an_empty_or_unreadable_folder_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path))}: no image files"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with warnings.catch_warnings(), pytest.raises(ValueError, match=f"{re.escape(str(tmp_path))}: no readable image"):
        warnings.simplefilter("ignore")
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_dataset(f"folder:{tmp_path / 'missing'}")


def test_a_folder_of_one_image_trains_on_it(tmp_path):
    from PIL import Image

    from spiral.datasets import load_dataset

    for name in ("square.png", "other.png"):  # whichever way their paths hash
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        Image.new("L", (20, 20), 255).save(folder / name)
        dataset = load_dataset(f"folder:{folder}", 16)
        assert len(dataset.train) == 1 and len(dataset.test) == 0
