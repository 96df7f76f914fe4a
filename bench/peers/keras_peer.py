"""Peer 3: Keras 3 on its torch backend, `model.fit` on in-memory arrays, fp32."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BATCH_SIZE, DROPOUT, LR, TASKS, EpochLog, load, peer_args  # noqa: E402

import keras  # noqa: E402
from keras import layers  # noqa: E402


def conv_bn(x, filters, stride=1, relu=True):
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x) if relu else x


def build(kind: str) -> keras.Model:
    inp = keras.Input((28, 28, 1))
    if kind == "cnn":
        x = layers.MaxPooling2D(2)(conv_bn(inp, 64))
        x = layers.MaxPooling2D(2)(conv_bn(x, 128))
        x = layers.Dropout(DROPOUT)(layers.Flatten()(x))
        x = layers.Dropout(DROPOUT)(layers.Dense(256, activation="relu")(x))
        return keras.Model(inp, layers.Dense(10)(x))
    x = conv_bn(inp, 32)
    for cin, cout, stride in ((32, 32, 1), (32, 64, 2), (64, 128, 2)):
        body = conv_bn(conv_bn(x, cout, stride), cout, relu=False)
        skip = x
        if stride != 1 or cin != cout:
            skip = layers.BatchNormalization(momentum=0.9)(layers.Conv2D(cout, 1, strides=stride, use_bias=False)(x))
        x = layers.ReLU()(layers.Add()([body, skip]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10)(x))


class Timing(keras.callbacks.Callback):
    def __init__(self, log: EpochLog, cap: float, stop_at: float, n_train: int):
        super().__init__()
        self.log, self.cap, self.stop_at, self.n_train = log, cap, stop_at, n_train
        self.t0 = self.train_s = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.log.begin()
        self.t0 = time.perf_counter()

    def on_test_begin(self, logs=None):
        self.train_s = time.perf_counter() - self.t0

    def on_epoch_end(self, epoch, logs=None):
        if self.log.end_epoch(self.train_s, self.n_train, logs["val_accuracy"], self.cap, self.stop_at):
            self.model.stop_training = True


def main() -> int:
    a = peer_args(__doc__)
    data, kind, _ = TASKS[a.task]
    xtr, ytr, xte, yte, mean, std = load(a.data_dir, data, a.limit)
    keras.utils.set_random_seed(0)
    prep = lambda x: ((x.astype("float32") / 255 - mean) / std)[..., None]  # noqa: E731
    model = build(kind)
    model.compile(optimizer=keras.optimizers.Adam(LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    log = EpochLog(a.result, {"peer": "keras", "precision": "fp32", "batch_size": BATCH_SIZE,
                              "version": keras.__version__, "backend": keras.backend.backend(),
                              "recipe": f"Adam lr {LR}, batch {BATCH_SIZE}, no augmentation, model.fit on arrays"})
    model.fit(prep(xtr), ytr, batch_size=BATCH_SIZE, epochs=a.epochs, validation_data=(prep(xte), yte),
              validation_batch_size=512, verbose=0, callbacks=[Timing(log, a.cap, a.stop_at, len(ytr))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
