"""Train a Shift MobileNetV2-w0.35 with ShiftAddAug on CIFAR-10 through the Python API.

Run from the repository root:

    python examples/augshift_cifar10.py --data ../shared/datasets/cifar10 --limit 5000 --epochs 2

It prints the target's test accuracy, checks that the exported target model
predicts exactly what the target path of the trained model predicts, and
saves the target as `augshift_target.keras`.
"""

import argparse
import math

import keras
import numpy as np

from keras_shiftadd import augment, data, zoo


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/cifar10",
                        help="CIFAR-10 image folders (train/ and test/)")
    parser.add_argument("--limit", type=int, default=5000,
                        help="training images to use (default: 5000)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="training epochs (default: 2)")
    parser.add_argument("--image-size", type=int, default=32,
                        help="network input side in pixels (default: 32)")
    args = parser.parse_args()

    # Real images, uint8 in memory; the pipeline crops, flips and scales.
    dataset = data.load(data=args.data, limit=args.limit, test_limit=2000)
    train = data.make_pipeline(
        dataset.x_train, dataset.y_train, args.image_size, 128, training=True,
        crop_padding=4, flip=True,
    )
    test = data.make_pipeline(
        dataset.x_test, dataset.y_test, args.image_size, 128, training=False
    )

    # Any functional CNN works; zoo.mobilenet_v2 is Keras' MobileNetV2 with
    # logits out and BatchNormalization momentum 0.9.
    base = zoo.mobilenet_v2((args.image_size, args.image_size, 3),
                            dataset.num_classes)
    model = augment(base, op="shift", width_mult=2.0, expand_mult=2.0, alpha=1.0)

    steps = math.ceil(len(dataset.x_train) / 128) * args.epochs
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(0.05, steps),
            momentum=0.9, nesterov=True, weight_decay=4e-5,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train, validation_data=test, epochs=args.epochs)

    # The standalone target: Shift layers only, the base model's parameters.
    target = model.target_model()
    images = next(iter(test))[0]
    difference = np.abs(target.predict(images, verbose=0)
                        - model.predict(images, verbose=0)).max()
    _, accuracy = model.evaluate(test, verbose=0)
    print(f"target test accuracy: {100 * accuracy:.2f}%")
    print(f"target parameters: {target.count_params():,} "
          f"(base: {base.count_params():,})")
    print(f"max |target_model() - target path| on one batch: {difference:.2e}")
    target.save("augshift_target.keras")


if __name__ == "__main__":
    main()
