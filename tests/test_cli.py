"""End-to-end tests of `keras-shiftadd train` on real images."""

import json
import shutil

import keras
import numpy as np
import pytest

from keras_shiftadd import cli, data


def run(argv):
    return cli.main(argv)


def test_train_digits_writes_outputs(tmp_path, capsys):
    output = tmp_path / "run"

    status = run(["train", "--epochs", "6", "--image-size", "16", "--quiet",
                  "--output", str(output)])

    assert status == 0
    assert (output / "target.keras").is_file()
    assert (output / "history.csv").is_file()
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["method"] == "AugShift"
    assert metrics["dataset"] == "digits"
    # Ten classes: chance is 10%. A short run on real digits clearly beats it.
    assert metrics["test_accuracy"] > 0.6
    printed = capsys.readouterr().out
    assert "AugShift" in printed
    assert "test acc" in printed

    # The saved target reloads with safe_mode and reproduces the accuracy.
    target = keras.saving.load_model(output / "target.keras", safe_mode=True)
    dataset = data.load_digits(seed=0)
    pipeline = data.make_pipeline(dataset.x_test, dataset.y_test, 16, 64,
                                  training=False)
    predictions = np.argmax(target.predict(pipeline, verbose=0), axis=-1)
    accuracy = float(np.mean(predictions == dataset.y_test))
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)


def test_compare_trains_both_versions(tmp_path, capsys):
    output = tmp_path / "compare"

    status = run(["train", "--compare", "--op", "add", "--epochs", "1",
                  "--limit", "128", "--test-limit", "64", "--image-size", "16", "--quiet",
                  "--output", str(output)])

    assert status == 0
    summary = json.loads((output / "summary.json").read_text())
    assert [row["method"] for row in summary] == ["Add", "AugAdd"]
    assert summary[0]["params"] == summary[1]["params"]
    assert (output / "plain" / "target.keras").is_file()
    assert (output / "augmented" / "target.keras").is_file()
    printed = capsys.readouterr().out
    assert "AugAdd" in printed


def test_train_cifar10_folder(tmp_path, cifar10_dir):
    output = tmp_path / "cifar"

    status = run(["train", "--data", str(cifar10_dir), "--limit", "256",
                  "--test-limit", "200", "--epochs", "1", "--op", "mult",
                  "--quiet", "--output", str(output)])

    assert status == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["train_images"] == 256
    assert metrics["test_images"] == 200
    assert metrics["method"] == "NetAug"


def test_train_mobilenet_on_cifar100_npz(tmp_path, cifar100_dir):
    output = tmp_path / "mobilenet"

    status = run(["train", "--data", str(cifar100_dir), "--model",
                  "mobilenetv2-w0.35", "--no-augmentation", "--limit", "128",
                  "--test-limit", "100", "--epochs", "1", "--batch-size", "64",
                  "--quiet",
                  "--output", str(output)])

    assert status == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["params"] > 400_000


def test_missing_data_directory_leaves_no_output(tmp_path, capsys):
    output = tmp_path / "never"

    status = run(["train", "--data", str(tmp_path / "nowhere"),
                  "--output", str(output)])

    assert status == 2
    assert "nowhere" in capsys.readouterr().err
    assert not output.exists()
    assert list(tmp_path.iterdir()) == []


def test_corrupt_image_leaves_no_output(tmp_path, cifar10_dir, capsys):
    folder = tmp_path / "images"
    for name in ("airplane", "cat"):
        (folder / name).mkdir(parents=True)
        for source in sorted((cifar10_dir / "train" / name).iterdir())[:4]:
            shutil.copy(source, folder / name / source.name)
    (folder / "cat" / "broken.jpg").write_bytes(b"\x00not a jpeg at all")
    output = tmp_path / "out"

    status = run(["train", "--data", str(folder), "--output", str(output)])

    assert status == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert not output.exists()


def test_empty_class_folder_is_rejected(tmp_path, cifar10_dir, capsys):
    folder = tmp_path / "images"
    (folder / "empty_class").mkdir(parents=True)
    (folder / "dog").mkdir()
    for source in sorted((cifar10_dir / "train" / "dog").iterdir())[:3]:
        shutil.copy(source, folder / "dog" / source.name)

    status = run(["train", "--data", str(folder), "--output",
                  str(tmp_path / "out")])

    assert status == 2
    assert "empty_class" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_npz_with_wrong_keys_is_rejected(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.zeros(4))

    status = run(["train", "--data", str(path), "--output", str(tmp_path / "out")])

    assert status == 2
    message = capsys.readouterr().err
    assert "images" in message
    assert "'x'" in message or "x" in message
    assert not (tmp_path / "out").exists()


def test_non_empty_output_is_kept(tmp_path, capsys):
    output = tmp_path / "busy"
    output.mkdir()
    (output / "keep.txt").write_text("user data")

    status = run(["train", "--epochs", "1", "--output", str(output)])

    assert status == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (output / "keep.txt").read_text() == "user data"


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--op", "divide"],
        ["train", "--epochs", "0"],
        ["train", "--width-mult", "0.5"],
        ["train", "--model", "resnet-1000"],
    ],
)
def test_invalid_options_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as error:
        run(argv)

    assert error.value.code == 2
    assert "invalid" in capsys.readouterr().err


def test_build_kernels_reports_library(capsys):
    status = cli.main(["build-kernels"])

    output = capsys.readouterr().out
    assert status == 0
    assert "Native adder kernels ready" in output
    assert output.strip().endswith(".so")


def test_build_kernels_without_compiler_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("KERAS_SHIFTADD_CACHE_DIR", str(tmp_path / "cache"))

    status = cli.main(["build-kernels"])

    assert status == 1
    assert "no-such-compiler" in capsys.readouterr().err
    assert not any((tmp_path / "cache").iterdir())


def test_train_with_hws_off_and_single_operator(tmp_path, capsys):
    output = tmp_path / "run"

    status = cli.main([
        "train", "--epochs", "1", "--limit", "200", "--hws", "off",
        "--augmented-op", "same", "--quiet", "--output", str(output),
    ])

    assert status == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["config"]["hws"] is False
    assert metrics["config"]["augmented_op"] == "shift"
    assert metrics["method"] == "AugShift (all shift)"
    assert metrics["hws_used"] is False
    assert output.stat().st_mode & 0o077 != 0


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--op", "mult", "--augmented-op", "same"], "--augmented-op same needs"),
        (["--augmented-op", "same", "--hws", "on"], "--hws on cannot"),
        (["--augmented-op", "same", "--mutate"], "--mutate cannot"),
        (["--op", "mult", "--hws", "on"], "--hws on needs"),
        (["--op", "mult", "--mutate"], "--mutate needs"),
        (["--no-augmentation", "--hws", "on"], "--hws on needs augmentation"),
    ],
)
def test_conflicting_ablation_flags_leave_no_output(tmp_path, capsys, flags, fragment):
    output = tmp_path / "new-parent" / "run"

    status = cli.main(["train", "--epochs", "1", "--output", str(output), *flags])

    assert status == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "new-parent").exists()
