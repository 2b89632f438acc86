"""Tests for keras_shiftadd.data on real images (digits, CIFAR-10, CIFAR-100)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_shiftadd import data
from keras_shiftadd.data import DataError

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CIFAR10 = DATASETS / "cifar10"
CIFAR100 = DATASETS / "cifar100"
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]

needs_cifar10 = pytest.mark.skipif(
    not (CIFAR10 / "train").is_dir(),
    reason=f"CIFAR-10 image folders not found at {CIFAR10}",
)
needs_cifar100 = pytest.mark.skipif(
    not (CIFAR100 / "train.npz").is_file(),
    reason=f"CIFAR-100 .npz files not found at {CIFAR100}",
)


def copy_cifar10_images(target, classes=("cat", "dog", "ship"), per_class=6):
    """Copy the first `per_class` CIFAR-10 training JPEGs of each class to `target/<class>`."""
    for class_name in classes:
        source = CIFAR10 / "train" / class_name
        destination = target / class_name
        destination.mkdir(parents=True)
        for image_path in sorted(source.iterdir())[:per_class]:
            shutil.copy(image_path, destination / image_path.name)
    return target


@pytest.fixture
def small_folder(tmp_path):
    return copy_cifar10_images(tmp_path / "small")


def distinct_images(count, seed=0):
    """Return `count` random uint8 32x32 RGB images that differ from each other."""
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def collect(dataset):
    """Concatenate all batches of a tf.data pipeline into numpy arrays."""
    images = []
    labels = []
    for image_batch, label_batch in dataset:
        images.append(image_batch.numpy())
        labels.append(label_batch.numpy())
    return np.concatenate(images), np.concatenate(labels)


# ---------------------------------------------------------------------------
# scikit-learn digits


def test_digits_shapes_and_split():
    digits = data.load_digits()

    assert digits.name == "digits"
    assert digits.x_train.shape == (1438, 8, 8, 1)
    assert digits.x_test.shape == (359, 8, 8, 1)
    assert digits.x_train.dtype == np.uint8
    assert digits.y_train.dtype == np.int32
    assert digits.x_train.max() == 255
    assert digits.image_shape == (8, 8, 1)
    assert digits.num_classes == 10
    assert digits.class_names == [str(digit) for digit in range(10)]
    # Stratified: each class of 174..183 images puts 20% (35..37) in the test split.
    test_counts = np.bincount(digits.y_test, minlength=10)
    assert test_counts.min() >= 34
    assert test_counts.max() <= 37


def test_digits_split_follows_seed():
    first = data.load_digits(seed=0)
    again = data.load_digits(seed=0)
    other = data.load_digits(seed=1)

    np.testing.assert_array_equal(first.x_test, again.x_test)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    assert not np.array_equal(first.x_test, other.x_test)


# ---------------------------------------------------------------------------
# Image folders


@needs_cifar10
def test_image_folder_cifar10_limit():
    dataset = data.load_image_folder(CIFAR10, limit=500, test_limit=200)

    assert dataset.name == "cifar10"
    assert dataset.x_train.shape == (500, 32, 32, 3)
    assert dataset.x_test.shape == (200, 32, 32, 3)
    assert dataset.x_train.dtype == np.uint8
    assert dataset.y_train.dtype == np.int32
    assert dataset.class_names == CIFAR10_CLASSES
    assert dataset.num_classes == 10
    assert np.bincount(dataset.y_train).tolist() == [50] * 10
    assert np.bincount(dataset.y_test).tolist() == [20] * 10
    # Real photos, not blank arrays.
    assert dataset.x_train.std() > 20


@needs_cifar10
def test_image_folder_decodes_real_pixels(small_folder):
    dataset = data.load_image_folder(small_folder, test_fraction=0.5)
    images = np.concatenate([dataset.x_train, dataset.x_test])
    labels = np.concatenate([dataset.y_train, dataset.y_test])

    for class_index, class_name in enumerate(dataset.class_names):
        for image_path in sorted((small_folder / class_name).iterdir()):
            expected = tf.io.decode_jpeg(tf.io.read_file(str(image_path))).numpy()
            matches = [np.array_equal(image, expected) for image in images]
            assert sum(matches) == 1, image_path
            assert labels[matches.index(True)] == class_index, image_path


@needs_cifar10
def test_image_folder_limit_follows_seed():
    first = data.load_image_folder(CIFAR10, limit=30, test_limit=10, seed=5)
    again = data.load_image_folder(CIFAR10, limit=30, test_limit=10, seed=5)
    other = data.load_image_folder(CIFAR10, limit=30, test_limit=10, seed=6)

    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_train, again.y_train)
    assert not np.array_equal(first.x_train, other.x_train)


@needs_cifar10
def test_image_folder_automatic_split(small_folder):
    dataset = data.load_image_folder(small_folder, test_fraction=0.5)

    assert dataset.name == "small"
    assert dataset.class_names == ["cat", "dog", "ship"]
    assert dataset.x_train.shape == (9, 32, 32, 3)
    assert dataset.x_test.shape == (9, 32, 32, 3)
    assert np.bincount(dataset.y_test).tolist() == [3, 3, 3]


@needs_cifar10
def test_image_folder_skips_hidden_and_other_files(small_folder):
    (small_folder / "cat" / ".hidden.jpg").write_bytes(b"not an image")
    (small_folder / "cat" / "notes.txt").write_text("not an image")
    (small_folder / ".cache").mkdir()

    dataset = data.load_image_folder(small_folder, test_fraction=0.5)

    assert dataset.class_names == ["cat", "dog", "ship"]
    assert len(dataset.x_train) + len(dataset.x_test) == 18


@needs_cifar10
def test_image_folder_reads_png(small_folder):
    image = tf.io.decode_jpeg(tf.io.read_file(str(small_folder / "cat" / "0000.jpg")))
    (small_folder / "cat" / "0000.jpg").unlink()
    (small_folder / "cat" / "0000.png").write_bytes(tf.io.encode_png(image).numpy())

    dataset = data.load_image_folder(small_folder, test_fraction=0.5)
    all_images = np.concatenate([dataset.x_train, dataset.x_test])

    assert any(np.array_equal(candidate, image.numpy()) for candidate in all_images)


@needs_cifar10
def test_image_folder_train_test_layout(tmp_path):
    copy_cifar10_images(tmp_path / "split" / "train", per_class=4)
    copy_cifar10_images(tmp_path / "split" / "test", per_class=2)

    dataset = data.load_image_folder(tmp_path / "split")

    assert dataset.x_train.shape == (12, 32, 32, 3)
    assert dataset.x_test.shape == (6, 32, 32, 3)
    assert dataset.class_names == ["cat", "dog", "ship"]


@needs_cifar10
def test_image_folder_class_mismatch(tmp_path):
    copy_cifar10_images(tmp_path / "split" / "train", classes=("cat", "dog", "ship"))
    copy_cifar10_images(tmp_path / "split" / "test", classes=("cat", "dog", "frog"))

    with pytest.raises(DataError, match="ship") as raised:
        data.load_image_folder(tmp_path / "split")
    assert "frog" in str(raised.value)


@needs_cifar10
def test_image_folder_missing_test_folder(tmp_path):
    copy_cifar10_images(tmp_path / "split" / "train")

    with pytest.raises(DataError, match="test"):
        data.load_image_folder(tmp_path / "split")


def test_image_folder_missing_directory(tmp_path):
    missing = tmp_path / "no_such_folder"

    with pytest.raises(DataError, match="no_such_folder"):
        data.load_image_folder(missing)


def test_image_folder_path_is_file(tmp_path):
    file_path = tmp_path / "images.txt"
    file_path.write_text("x")

    with pytest.raises(DataError, match="not a directory"):
        data.load_image_folder(file_path)


def test_image_folder_without_class_folders(tmp_path):
    with pytest.raises(DataError, match="No class subfolders"):
        data.load_image_folder(tmp_path)


@needs_cifar10
def test_image_folder_single_class(tmp_path):
    copy_cifar10_images(tmp_path / "one", classes=("cat",))

    with pytest.raises(DataError, match="at least 2 classes"):
        data.load_image_folder(tmp_path / "one")


@needs_cifar10
def test_image_folder_empty_class(small_folder):
    (small_folder / "empty_class").mkdir()

    with pytest.raises(DataError, match="empty_class"):
        data.load_image_folder(small_folder)


@needs_cifar10
def test_image_folder_corrupt_file(small_folder):
    corrupt = small_folder / "dog" / "x.jpg"
    corrupt.write_bytes(np.random.default_rng(0).bytes(500))

    with pytest.raises(DataError, match="x.jpg") as raised:
        data.load_image_folder(small_folder, test_fraction=0.5)
    assert "Delete or replace" in str(raised.value)


@needs_cifar10
def test_image_folder_sizes_differ(small_folder):
    small_image = tf.zeros((16, 16, 3), dtype=tf.uint8)
    (small_folder / "ship" / "small.png").write_bytes(tf.io.encode_png(small_image).numpy())

    with pytest.raises(DataError, match="differ in size") as raised:
        data.load_image_folder(small_folder, test_fraction=0.5)
    assert "16x16" in str(raised.value)
    assert "32x32" in str(raised.value)


@needs_cifar10
def test_image_folder_sizes_differ_across_batches(small_folder, monkeypatch):
    # With one image per decode batch, the odd size shows up between batches.
    monkeypatch.setattr(data, "_DECODE_BATCH_SIZE", 1)
    small_image = tf.zeros((16, 16, 3), dtype=tf.uint8)
    (small_folder / "ship" / "small.png").write_bytes(tf.io.encode_png(small_image).numpy())

    with pytest.raises(DataError, match="small.png"):
        data.load_image_folder(small_folder, test_fraction=0.5)


@pytest.mark.parametrize(
    "argument, value",
    [("limit", 0), ("test_limit", -1), ("limit", 2.5), ("seed", -1), ("test_fraction", 1.0)],
)
def test_image_folder_invalid_arguments(tmp_path, argument, value):
    with pytest.raises(DataError, match=argument):
        data.load_image_folder(tmp_path, **{argument: value})


# ---------------------------------------------------------------------------
# NumPy archives


@needs_cifar100
def test_npz_cifar100_limit():
    dataset = data.load_npz(CIFAR100, limit=1000, test_limit=300)

    assert dataset.name == "cifar100"
    assert dataset.x_train.shape == (1000, 32, 32, 3)
    assert dataset.x_test.shape == (300, 32, 32, 3)
    assert dataset.x_train.dtype == np.uint8
    assert dataset.y_train.dtype == np.int32
    assert dataset.num_classes == 100
    assert dataset.class_names[:3] == ["apple", "aquarium_fish", "baby"]
    assert np.bincount(dataset.y_test, minlength=100).tolist() == [3] * 100


def save_npz(path, x, y):
    np.savez(path, x=x, y=y)
    return path


def test_npz_single_file_split(tmp_path):
    images = distinct_images(40)[..., 0]  # grayscale (N, H, W)
    labels = np.repeat(np.arange(4), 10).reshape(-1, 1)
    path = save_npz(tmp_path / "gray.npz", images, labels)

    dataset = data.load_npz(path, test_fraction=0.25)

    assert dataset.name == "gray"
    assert dataset.x_train.shape == (30, 32, 32, 1)
    assert dataset.x_test.shape == (10, 32, 32, 1)
    assert dataset.y_train.dtype == np.int32
    # Each class's share is 2.5 test images, so two classes give 2 and two give 3.
    assert sorted(np.bincount(dataset.y_test).tolist()) == [2, 2, 3, 3]
    assert dataset.class_names == ["0", "1", "2", "3"]


def test_npz_float_images_and_labels_file(tmp_path):
    images = distinct_images(10)
    labels = np.arange(10) % 2
    save_npz(tmp_path / "train.npz", images.astype(np.float32), labels)
    save_npz(tmp_path / "test.npz", images[:4].astype(np.float64), labels[:4])
    (tmp_path / "labels.txt").write_text("even\nodd\n")

    dataset = data.load_npz(tmp_path)

    np.testing.assert_array_equal(dataset.x_train, images)
    assert dataset.class_names == ["even", "odd"]


def test_npz_labels_file_wrong_count(tmp_path):
    save_npz(tmp_path / "train.npz", distinct_images(6), np.arange(6) % 3)
    save_npz(tmp_path / "test.npz", distinct_images(3), np.arange(3))
    (tmp_path / "labels.txt").write_text("a\nb\n")

    dataset = data.load_npz(tmp_path)

    assert dataset.class_names == ["0", "1", "2"]


def test_npz_wrong_keys(tmp_path):
    path = tmp_path / "wrong.npz"
    np.savez(path, images=distinct_images(4), labels=np.arange(4))

    with pytest.raises(DataError, match="wrong.npz") as raised:
        data.load_npz(path)
    message = str(raised.value)
    assert "'images'" in message
    assert "'labels'" in message
    assert "'x'" in message


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.arange(5), "differ in length"),
        (np.arange(6) * 0.5, "integer"),
        (np.arange(6) - 1, "negative"),
        (np.zeros((6, 2), dtype=np.int64), "shape"),
    ],
)
def test_npz_bad_labels(tmp_path, labels, match):
    path = save_npz(tmp_path / "bad.npz", distinct_images(6), labels)

    with pytest.raises(DataError, match=match):
        data.load_npz(path)


def test_npz_images_out_of_range(tmp_path):
    images = distinct_images(6).astype(np.float32) * 2
    path = save_npz(tmp_path / "bright.npz", images, np.arange(6) % 2)

    with pytest.raises(DataError, match="0..255"):
        data.load_npz(path)


def test_npz_directory_missing_test(tmp_path):
    save_npz(tmp_path / "train.npz", distinct_images(4), np.arange(4) % 2)

    with pytest.raises(DataError, match="test.npz"):
        data.load_npz(tmp_path)


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"this is not a zip file")

    with pytest.raises(DataError, match="broken.npz"):
        data.load_npz(path)


def test_npz_train_test_shapes_differ(tmp_path):
    save_npz(tmp_path / "train.npz", distinct_images(4), np.arange(4) % 2)
    save_npz(tmp_path / "test.npz", distinct_images(4)[:, :16], np.arange(4) % 2)

    with pytest.raises(DataError, match="differ in shape"):
        data.load_npz(tmp_path)


# ---------------------------------------------------------------------------
# TensorFlow Datasets


def test_tfds_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=30):
        dataset = data.load_tfds("cifar10", data_dir=str(tmp_path), download=False, limit=20)

    assert dataset.name == "cifar10"
    assert dataset.x_train.shape == (20, 32, 32, 3)
    assert dataset.x_test.shape == (30, 32, 32, 3)
    assert dataset.x_train.dtype == np.uint8
    assert dataset.y_train.dtype == np.int32
    # TFDS reads the CIFAR-10 label names while preparing the real data, so
    # mocked data has only the numbered names of its ClassLabel.
    assert dataset.class_names == [str(label) for label in range(10)]


def test_tfds_offline_failure(tmp_path):
    with pytest.raises(DataError, match="cifar10") as raised:
        data.load_tfds("cifar10", data_dir=str(tmp_path), download=False)
    message = str(raised.value)
    assert str(tmp_path) in message
    assert "tfds build cifar10" in message
    assert "--data-dir" in message
    assert "--data DIR" in message


def test_tfds_unknown_name(tmp_path):
    with pytest.raises(DataError, match="no_such_dataset_xyz"):
        data.load_tfds("no_such_dataset_xyz", data_dir=str(tmp_path), download=False)


# ---------------------------------------------------------------------------
# load()


def test_load_default_is_digits():
    dataset = data.load(limit=100, test_limit=50)

    assert dataset.name == "digits"
    assert dataset.x_train.shape == (100, 8, 8, 1)
    assert dataset.x_test.shape == (50, 8, 8, 1)


def test_load_digits_by_name():
    assert data.load(dataset="digits").name == "digits"


def test_load_both_sources():
    with pytest.raises(DataError, match="not both") as raised:
        data.load(data="some_folder", dataset="cifar10")
    assert "some_folder" in str(raised.value)
    assert "cifar10" in str(raised.value)


def test_load_missing_path(tmp_path):
    missing = tmp_path / "absent"

    with pytest.raises(DataError, match="Data path not found: .*absent"):
        data.load(data=missing)


def test_load_non_npz_file(tmp_path):
    path = tmp_path / "images.csv"
    path.write_text("1,2,3")

    with pytest.raises(DataError, match="images.csv"):
        data.load(data=path)


@needs_cifar10
def test_load_dispatches_to_image_folder(small_folder):
    dataset = data.load(data=small_folder, limit=6)

    assert dataset.name == "small"
    assert dataset.x_train.shape == (6, 32, 32, 3)


def test_load_dispatches_to_npz(tmp_path):
    save_npz(tmp_path / "train.npz", distinct_images(8), np.arange(8) % 2)
    save_npz(tmp_path / "test.npz", distinct_images(4), np.arange(4) % 2)

    file_dataset = data.load(data=tmp_path / "train.npz")
    folder_dataset = data.load(data=tmp_path)

    assert len(file_dataset.x_train) + len(file_dataset.x_test) == 8
    assert len(folder_dataset.x_train) == 8
    assert len(folder_dataset.x_test) == 4


def test_load_tfds_name(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        dataset = data.load(dataset="fashion_mnist", data_dir=str(tmp_path), limit=10)

    assert dataset.name == "fashion_mnist"
    assert dataset.x_train.shape == (10, 28, 28, 1)
    assert dataset.num_classes == 10
    assert dataset.class_names[0] == "T-shirt/top"


# ---------------------------------------------------------------------------
# Augmentation defaults and pipelines


def make_dataset(name, height):
    images = np.zeros((2, height, height, 3), dtype=np.uint8)
    labels = np.zeros(2, dtype=np.int32)
    return data.ImageDataset(name, images, labels, images, labels, ["a"])


def test_default_augmentation():
    assert data.default_augmentation(data.load_digits()) == {"crop_padding": 1, "flip": False}
    assert data.default_augmentation(make_dataset("cifar10", 32)) == {
        "crop_padding": 4,
        "flip": True,
    }
    assert data.default_augmentation(make_dataset("photos", 4)) == {
        "crop_padding": 1,
        "flip": True,
    }
    assert data.default_augmentation(make_dataset("mnist", 28))["flip"] is False


def test_pipeline_test_mode_output():
    digits = data.load_digits()

    pipeline = data.make_pipeline(digits.x_test, digits.y_test, 8, 64, training=False)
    images, labels = collect(pipeline)
    first_images, first_labels = next(iter(pipeline))

    assert first_images.shape == (64, 8, 8, 1)
    assert first_images.dtype == tf.float32
    assert first_labels.dtype == tf.int32
    assert images.shape == (359, 8, 8, 1)  # last partial batch kept
    assert images.min() >= 0.0
    assert images.max() == pytest.approx(1.0)
    # Test mode neither shuffles nor augments.
    np.testing.assert_allclose(images, digits.x_test / 255.0, atol=1e-6)
    np.testing.assert_array_equal(labels, digits.y_test)


def test_pipeline_resize_and_one_hot():
    digits = data.load_digits()

    pipeline = data.make_pipeline(
        digits.x_test[:10], digits.y_test[:10], 32, 4, training=False, num_classes=10, one_hot=True
    )
    images, labels = collect(pipeline)

    assert images.shape == (10, 32, 32, 1)
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    assert labels.shape == (10, 10)
    assert labels.dtype == np.float32
    np.testing.assert_array_equal(labels.argmax(axis=1), digits.y_test[:10])
    np.testing.assert_array_equal(labels.sum(axis=1), np.ones(10))


def test_pipeline_one_hot_needs_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        data.make_pipeline(distinct_images(4), np.arange(4), 32, 2, training=False, one_hot=True)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"image_size": 0}, "image_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"crop_padding": -1}, "crop_padding"),
        ({"num_classes": 2}, "labels must be in"),
        ({"x": np.zeros((4, 32, 32, 3), dtype=np.float32)}, "uint8"),
        ({"y": np.arange(3)}, "shape"),
    ],
)
def test_pipeline_invalid_arguments(overrides, match):
    arguments = {"x": distinct_images(4), "y": np.arange(4), "image_size": 32, "batch_size": 2}
    arguments.update(overrides)

    with pytest.raises(DataError, match=match):
        data.make_pipeline(training=True, **arguments)


def test_pipeline_same_seed_same_batches():
    images = distinct_images(64)
    labels = np.arange(64) % 10

    def run(seed):
        pipeline = data.make_pipeline(
            images, labels, 32, 16, training=True, crop_padding=4, flip=True, seed=seed
        )
        return collect(pipeline)

    first_images, first_labels = run(seed=7)
    again_images, again_labels = run(seed=7)
    other_images, _ = run(seed=8)

    np.testing.assert_array_equal(first_images, again_images)
    np.testing.assert_array_equal(first_labels, again_labels)
    assert not np.array_equal(first_images, other_images)


def test_pipeline_reshuffles_each_epoch():
    images = distinct_images(64)
    pipeline = data.make_pipeline(images, np.arange(64), 32, 64, training=True, seed=1)

    first_epoch, first_labels = collect(pipeline)
    second_epoch, second_labels = collect(pipeline)

    assert not np.array_equal(first_labels, second_labels)
    assert sorted(first_labels.tolist()) == list(range(64))
    # Without augmentation the training images are the inputs, reordered.
    np.testing.assert_allclose(first_epoch, images[first_labels] / 255.0, atol=1e-6)
    np.testing.assert_allclose(second_epoch, images[second_labels] / 255.0, atol=1e-6)


def read_cifar10_photo(folder):
    return tf.io.decode_jpeg(tf.io.read_file(str(folder / "cat" / "0000.jpg"))).numpy()


@needs_cifar10
def test_pipeline_crop_changes_training_only(small_folder):
    photo = read_cifar10_photo(small_folder)
    images = np.repeat(photo[np.newaxis], 32, axis=0)
    labels = np.zeros(32, dtype=np.int32)
    original = photo / 255.0

    train_images, _ = collect(
        data.make_pipeline(images, labels, 32, 8, training=True, crop_padding=4)
    )
    test_images, _ = collect(
        data.make_pipeline(images, labels, 32, 8, training=False, crop_padding=4)
    )

    assert train_images.shape == (32, 32, 32, 3)
    # 80 of the 81 crop offsets move the image, so nearly all copies change.
    changed = [not np.allclose(image, original, atol=1e-6) for image in train_images]
    assert sum(changed) >= 28
    # A shifted crop brings in zero padding along at least one edge.
    edges_black = [
        np.all(image[0] == 0)
        or np.all(image[-1] == 0)
        or np.all(image[:, 0] == 0)
        or np.all(image[:, -1] == 0)
        for image in train_images
    ]
    assert sum(edges_black) >= 28
    for image in test_images:
        np.testing.assert_allclose(image, original, atol=1e-6)


@needs_cifar10
def test_pipeline_flip_mirrors_training_only(small_folder):
    photo = read_cifar10_photo(small_folder)
    images = np.repeat(photo[np.newaxis], 32, axis=0)
    labels = np.zeros(32, dtype=np.int32)
    original = photo / 255.0
    mirrored = original[:, ::-1]

    train_images, _ = collect(data.make_pipeline(images, labels, 32, 8, training=True, flip=True))
    test_images, _ = collect(data.make_pipeline(images, labels, 32, 8, training=False, flip=True))

    unchanged = sum(np.allclose(image, original, atol=1e-6) for image in train_images)
    flipped = sum(np.allclose(image, mirrored, atol=1e-6) for image in train_images)
    assert unchanged + flipped == 32
    assert unchanged > 0
    assert flipped > 0
    for image in test_images:
        np.testing.assert_allclose(image, original, atol=1e-6)


def test_image_dataset_converts_labels():
    images = distinct_images(4)

    dataset = data.ImageDataset(
        "pairs", images, np.array([0, 1, 0, 1]), images, [1, 0, 1, 0], ["a", "b"]
    )

    assert dataset.y_train.dtype == np.int32
    assert dataset.y_test.dtype == np.int32
    assert repr(dataset) == (
        "ImageDataset(name='pairs', train=4, test=4, image_shape=(32, 32, 3), num_classes=2)"
    )


def test_image_dataset_label_out_of_range():
    images = distinct_images(2)

    with pytest.raises(DataError, match="0..1"):
        data.ImageDataset("pairs", images, np.array([0, 2]), images, np.array([0, 1]), ["a", "b"])
