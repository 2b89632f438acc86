"""The `keras-shiftadd export` command: target model to LiteRT, with checks."""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from keras_shiftadd.argtypes import positive_int as _positive_int

# Largest top-1 difference, in percentage points, between the Keras model and
# its float LiteRT export on the test split before `export` fails.
MAX_ACCURACY_DIFFERENCE = 0.1


def add_parser(subparsers):
    """Add the `export` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "export",
        help="export a trained target network to LiteRT and check it",
        description=(
            "Convert a target network to a LiteRT (.tflite) file of builtin "
            "operators, then compare its top-1 accuracy on the test split "
            "with the Keras model's and print the file size, the operator "
            "list and the interpreter's median latency for one image. "
            "Without --data or --dataset the test images are scikit-learn's "
            "bundled 8x8 digits."
        ),
    )
    parser.add_argument(
        "model", metavar="RUN_OR_MODEL",
        help="a run directory written by `keras-shiftadd train` (its "
             "target.keras is exported) or a .keras file of a target or "
             "ShiftAddAugModel",
    )
    parser.add_argument(
        "--output", metavar="FILE",
        help="the .tflite file to write (default: target.tflite in the run "
             "directory, or the .keras path with the suffix .tflite)",
    )
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output file")
    parser.add_argument(
        "--int8", action="store_true",
        help="quantize the Mult layers (Conv2D, DepthwiseConv2D, Dense) to "
             "int8 after training, calibrated on training images; Shift and "
             "adder layers stay float32",
    )
    parser.add_argument(
        "--multiplication-free", action="store_true",
        help="fail if the target has a layer that multiplies activations by "
             "weights (the depthwise and dense layers of an Add target)",
    )
    parser.add_argument(
        "--integer-reference", metavar="DIR",
        help="also run the integer reference inference of a Shift target on "
             "the test images and write its packed weight codes "
             "(weights.bin, manifest.json) to DIR",
    )

    source = parser.add_argument_group("data for the accuracy check and int8 calibration")
    source.add_argument(
        "--data", metavar="PATH",
        help="image folder, folder with train.npz and test.npz, or .npz file, "
             "as for `keras-shiftadd train`",
    )
    source.add_argument("--dataset", metavar="NAME",
                        help="'digits' (the default) or a TensorFlow Datasets name")
    source.add_argument("--data-dir", metavar="DIR",
                        help="TensorFlow Datasets data directory")
    source.add_argument("--limit", type=_positive_int, metavar="N", default=300,
                        help="training images used to calibrate int8 "
                             "(default: 300)")
    source.add_argument("--test-limit", type=_positive_int, metavar="N",
                        help="use a random subset of N test images "
                             "(default: the whole test split)")
    source.add_argument(
        "--image-size", type=_positive_int, metavar="PIXELS",
        help="side of the square network input in pixels (default: read "
             "from the model input; a different value is an error)",
    )
    source.add_argument("--seed", type=int, default=0,
                        help="seed of the data split and subsets (default: 0)")
    source.add_argument("--batch-size", type=_positive_int, default=64,
                        help="images per inference batch (default: 64)")
    source.add_argument("--latency-runs", type=_positive_int, default=100,
                        help="single-image invocations timed for the median "
                             "latency (default: 100)")
    parser.set_defaults(handler=run)
    return parser


def resolve_model_path(path):
    """Return the .keras file named by a run directory or a .keras path."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "target.keras"
        if not candidate.is_file():
            raise ValueError(
                f"Run directory {path} contains no target.keras. Pass a "
                "directory written by `keras-shiftadd train` or a .keras file."
            )
        return candidate
    if not path.is_file():
        raise ValueError(
            f"Model not found: {path}. Pass a run directory or a .keras file."
        )
    if path.suffix != ".keras":
        raise ValueError(
            f"Model file {path} is not a .keras file. Save the model with "
            "model.save('name.keras') and pass that file."
        )
    return path


def default_output(model_argument, model_path):
    """Return target.tflite in a run directory, else the .keras name as .tflite."""
    if Path(model_argument).is_dir():
        return Path(model_argument) / "target.tflite"
    return model_path.with_suffix(".tflite")


def _image_size(model, requested):
    """Return the square input side of `model`, checking `requested`."""
    shape = model.input_shape
    height, width = shape[1], shape[2]
    if height is None or height != width:
        raise ValueError(
            f"Model '{model.name}' has input shape {shape}; export needs a "
            "fixed square input (batch, size, size, channels)."
        )
    if requested is not None and requested != height:
        raise ValueError(
            f"Invalid --image-size {requested}: model '{model.name}' takes "
            f"{height}x{width} images. Omit --image-size or pass {height}."
        )
    return height


def _images(x, y, image_size, batch_size):
    """Preprocess uint8 images as training did (scale to [0, 1], resize)."""
    from keras_shiftadd import data as data_lib

    pipeline = data_lib.make_pipeline(
        x, y, image_size, batch_size, training=False
    )
    images, labels = [], []
    for batch_images, batch_labels in pipeline:
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(images), np.concatenate(labels)


def _load_dataset(args, channels, classes=None):
    from keras_shiftadd import data as data_lib

    dataset = data_lib.load(
        data=args.data, dataset=args.dataset, limit=args.limit,
        test_limit=args.test_limit, seed=args.seed, data_dir=args.data_dir,
    )
    if dataset.image_shape[-1] != channels:
        raise ValueError(
            f"Dataset {dataset.name!r} has {dataset.image_shape[-1]} channels "
            f"but the model takes {channels}. Pass the dataset the model was "
            "trained on with --data or --dataset."
        )
    if classes is not None and dataset.num_classes != classes:
        raise ValueError(
            f"Dataset {dataset.name!r} has {dataset.num_classes} classes but "
            f"the model predicts {classes}. Pass the dataset the model was "
            "trained on with --data or --dataset."
        )
    return dataset


def _accuracy(outputs, labels):
    return 100.0 * float(np.mean(np.argmax(outputs, axis=-1) == labels))


def run(args):
    """Run `keras-shiftadd export`; return the exit status."""
    import keras

    import keras_shiftadd  # noqa: F401  (registers the layers for loading)
    from keras_shiftadd import export

    model_path = resolve_model_path(args.model)
    output = Path(args.output) if args.output else default_output(args.model, model_path)
    if output.exists() and not args.overwrite:
        raise ValueError(
            f"Output file exists: {output}. Choose another --output or pass "
            "--overwrite."
        )
    if args.integer_reference and Path(args.integer_reference).is_file():
        raise ValueError(
            f"Invalid --integer-reference {args.integer_reference}: it is a "
            "file. Pass a directory path."
        )

    model = keras.saving.load_model(model_path, compile=False)
    target = export.target_of(model)
    if args.integer_reference:
        # Fails now, before any file is written, for targets that are not
        # made of Shift layers.
        export.IntegerReference(target)
    image_size = _image_size(target, args.image_size)
    dataset = _load_dataset(args, target.input_shape[-1], target.output_shape[-1])
    print(
        f"Data: {dataset.name}, {len(dataset.x_test)} test images, "
        f"{len(dataset.x_train)} training images for calibration"
    )
    test_images, test_labels = _images(
        dataset.x_test, dataset.y_test, image_size, args.batch_size
    )
    representative = None
    if args.int8:
        representative, _ = _images(
            dataset.x_train, dataset.y_train, image_size, args.batch_size
        )

    export.to_litert(
        target, output, int8=args.int8, representative_images=representative,
        multiplication_free=args.multiplication_free,
    )

    keras_outputs = target.predict(test_images, batch_size=args.batch_size, verbose=0)
    runner = export.LiteRTRunner(output)
    litert_outputs = runner.predict(test_images, batch_size=args.batch_size)
    latency = runner.median_latency_ms(test_images[0], runs=args.latency_runs)
    keras_accuracy = _accuracy(keras_outputs, test_labels)
    litert_accuracy = _accuracy(litert_outputs, test_labels)
    difference = litert_accuracy - keras_accuracy
    counts = export.operator_counts(output)

    print(f"Wrote {output} ({os.path.getsize(output):,} bytes)")
    print("Operators: " + ", ".join(f"{name} x{n}" for name, n in counts.items()))
    print(f"Keras top-1:  {keras_accuracy:.2f}% on {len(test_labels)} test images")
    print(f"LiteRT top-1: {litert_accuracy:.2f}% ({difference:+.2f} points)")
    print(
        "Max |LiteRT - Keras| output: "
        f"{float(np.max(np.abs(litert_outputs - keras_outputs))):.3g}"
    )
    print(f"LiteRT median latency: {latency:.3f} ms per image (batch 1, this machine)")

    if args.integer_reference:
        _run_integer_reference(
            export, target, test_images, test_labels, keras_outputs,
            args.integer_reference,
        )

    if not args.int8 and abs(difference) > MAX_ACCURACY_DIFFERENCE:
        print(
            f"keras-shiftadd: error: the LiteRT accuracy differs from the "
            f"Keras accuracy by {abs(difference):.2f} points, more than "
            f"{MAX_ACCURACY_DIFFERENCE} points; {output} is kept for inspection.",
            file=sys.stderr,
        )
        return 1
    return 0


def _run_integer_reference(export, target, images, labels, keras_outputs, directory):
    reference = export.IntegerReference(target)
    outputs = reference.predict(images)
    reference.save_codes(directory)
    counts = reference.operation_counts()
    agreement = 100.0 * float(
        np.mean(np.argmax(outputs, -1) == np.argmax(keras_outputs, -1))
    )
    print(
        f"Integer reference top-1: {_accuracy(outputs, labels):.2f}%, "
        f"same class as Keras on {agreement:.2f}% of images, max output "
        f"difference {float(np.max(np.abs(outputs - keras_outputs))):.3g}"
    )
    print(
        "Integer operations per image: "
        f"{counts['shift_add']:,} shift-and-add terms "
        f"({counts['negation']:,} negated), "
        f"{counts['batch_norm_scale']:,} BatchNormalization scales and "
        f"{counts['batch_norm_offset']:,} offsets, "
        f"{counts['pooling_scale']:,} pooling scales, "
        f"{counts['activation_scale']:,} hard-sigmoid scales, "
        f"{counts['activation_multiplication']:,} products of two activations, "
        f"{counts['weight_multiplications']} weight multiplications"
    )
    print(f"Wrote packed weight codes to {directory}")
