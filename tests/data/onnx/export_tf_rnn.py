"""Regenerates tests/data/onnx/tf_rnn_*.onnx: Keras 3 LSTM layers (return_sequences,
go_backwards, Bidirectional, stacked under a Dense head), Keras 3 GRU (reset_after True and
False, every step or the last), SimpleRNN and an LSTM behind Masking, and tf.reverse_sequence,
converted by tf2onnx (1.17, TensorFlow 2.21) through ``tf2onnx.convert.from_function`` with a
dynamic batch dimension. tf2onnx rewrites Keras's LSTM while loop into an ONNX LSTM node with
ONNX's gate order and biases, zero initial states expanded from the input's shape ([N, H],
unsqueezed to [1, N, H]); Keras 3's GRU, SimpleRNN and the masked LSTM stay ONNX Loop nodes
(the while loop over T, its trip count from the input's shape; graphc unrolls them).

Run with a Python that has tensorflow-cpu and tf2onnx (not a graphc dependency):
``python tests/data/onnx/export_tf_rnn.py [NAME...]``.
"""

import os
import sys

import export_tf  # (this folder: the script's own)
import keras
import numpy as np
import tensorflow as tf
import tf2onnx
from keras import layers

HERE = os.path.dirname(os.path.abspath(__file__))
T, C, H = 5, 3, 4


def save(name, model, specs):
    export_tf.save(f"rnn_{name}", model, specs, opset=14)  # tf_rnn_{name}_14.onnx


def seq(*ls, inp=None):
    keras.utils.set_random_seed(len(ls) + 7)
    x = keras.Input((T, C)) if inp is None else inp
    y = x
    for layer in ls:
        y = layer(y)
    return keras.Model(x, y)


def main(names):
    spec = [tf.TensorSpec([None, T, C], tf.float32, name="x")]
    models = {
        "lstm": lambda: seq(layers.LSTM(H, return_sequences=True)),
        "back": lambda: seq(layers.LSTM(H, return_sequences=True, go_backwards=True)),
        "bilstm": lambda: seq(layers.Bidirectional(layers.LSTM(H, return_sequences=True))),
        "stack": lambda: seq(
            layers.LSTM(H, return_sequences=True),
            layers.Bidirectional(layers.LSTM(H)),
            layers.Dense(2),
        ),
        "gru": lambda: seq(layers.GRU(H, return_sequences=True)),
        "grulast": lambda: seq(layers.GRU(H)),
        "grurb0": lambda: seq(layers.GRU(H, reset_after=False, return_sequences=True)),
        "simplernn": lambda: seq(layers.SimpleRNN(H, return_sequences=True)),
        "masklstm": lambda: seq(layers.Masking(0.0), layers.LSTM(H)),
    }
    for name, make in models.items():
        if names and name not in names:
            continue
        m = make()
        for w in m.weights:  # away from Keras's small init: more of tanh's range
            w.assign(np.random.default_rng(len(w.name)).uniform(-0.8, 0.8, w.shape))
        save(name, m, spec)
    if not names or "revseq" in names:  # tf.reverse_sequence of a padded batch
        lens = tf.TensorSpec([None], tf.int32, name="lens")

        @tf.function(input_signature=[spec[0], lens])
        def rev(x, n):
            return tf.reverse_sequence(x, n, seq_axis=1, batch_axis=0) * 2.0

        proto, _ = tf2onnx.convert.from_function(rev, input_signature=[spec[0], lens], opset=14)
        with open(os.path.join(HERE, "tf_rnn_revseq_14.onnx"), "wb") as fh:
            fh.write(proto.SerializeToString())


if __name__ == "__main__":
    main(sys.argv[1:])
