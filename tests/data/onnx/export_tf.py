"""Regenerates tests/data/onnx/tf_*.onnx: small Keras models converted by tf2onnx (1.17, from
TensorFlow 2.21 / Keras 3) through ``tf2onnx.convert.from_function`` with a dynamic batch
dimension (tf2onnx names it ``unk__NNN``). They keep tf2onnx's patterns: Keras 3's Embedding
wraps negative ids with integer arithmetic on the id input (Add, Less, Not, Cast, Mul) before
its Gather; a Dense on a sequence is a Tensordot (Reshape of [N, T, C] to [-1, C], MatMul, then
a Reshape back to a shape built by Shape -> Cast -> Gather -> Concat -> Cast; attention's
batched MatMuls merge N with the heads).

Run with a Python that has tensorflow-cpu and tf2onnx (not a graphc dependency):
``python tests/data/onnx/export_tf.py``.
"""

import os

import keras
import tensorflow as tf
import tf2onnx
from keras import layers

HERE = os.path.dirname(os.path.abspath(__file__))


def save(name, model, specs, opset=13):
    @tf.function(input_signature=specs)
    def f(*a):
        return model(list(a) if len(a) > 1 else a[0], training=False)

    proto, _ = tf2onnx.convert.from_function(f, input_signature=specs, opset=opset)
    with open(os.path.join(HERE, f"tf_{name}_{opset}.onnx"), "wb") as fh:
        fh.write(proto.SerializeToString())


def main():
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.Input((7,), dtype="int32"),
            layers.Embedding(20, 5),
            layers.GlobalAveragePooling1D(),
            layers.Dense(3, activation="softmax"),
        ]
    )
    save("embed", m, [tf.TensorSpec((None, 7), tf.int32, name="ids")])
    m = keras.Sequential(
        [
            keras.Input((3, 6)),
            layers.Dense(4, activation="relu"),
            layers.LayerNormalization(),
            layers.Dense(5, activation="tanh"),
            layers.GlobalAveragePooling1D(),
            layers.Dense(2, activation="softmax"),
        ]
    )
    for opset in (13, 18):
        save("seq_dense", m, [tf.TensorSpec((None, 3, 6), tf.float32, name="x")], opset)
    # the same with a batch of 1, as Keras models saved with a fixed input shape are
    save("seq_dense_b1", m, [tf.TensorSpec((1, 3, 6), tf.float32, name="x")])
    # Keras's MultiHeadAttention: tf2onnx writes its einsums as batched MatMuls of values whose
    # batch and head axes a Reshape merges, to a shape built by ReduceProd of Shape's batch
    # axes (N*heads) and a Max of two shapes
    a = keras.Input((3, 4))
    h = layers.MultiHeadAttention(num_heads=2, key_dim=2)(a, a)
    h = layers.LayerNormalization()(layers.Add()([a, h]))
    m = keras.Model(a, layers.Dense(2)(layers.GlobalAveragePooling1D()(h)))
    save("mha", m, [tf.TensorSpec((None, 3, 4), tf.float32, name="x")])
    # MLP-Mixer's token mixing: Permute -> Dense -> Permute; tf2onnx's transpose optimizer
    # leaves a Reshape to [1, -1, C] and a Squeeze of the unit axis before the MatMul
    m = keras.Sequential(
        [
            keras.Input((3, 4)),
            layers.Dense(4, activation="relu"),
            layers.Permute((2, 1)),
            layers.Dense(3),
            layers.Permute((2, 1)),
            layers.Flatten(),
            layers.Dense(2),
        ]
    )
    save("mixer", m, [tf.TensorSpec((None, 3, 4), tf.float32, name="x")])


if __name__ == "__main__":
    main()
