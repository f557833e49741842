"""A convolutional network on the handwritten-digits images (8x8 pixels, 10 classes): train it,
export it as a shared library and as an ONNX file, and check that both predict what the
in-process model does (the ONNX file is written where the onnx package is installed, and run by
ONNX Runtime where that is installed too: `pip install -e ".[onnx]"`).

    python examples/digits_cnn.py [--epochs 20] [--out examples/out]

The network takes the 64 raw pixel values (0..16) of a row, scales them to 0..1 and views them
as one 8x8 image: conv 3x3 (16 filters, 'same' padding) + relu -> 2x2 max pool -> conv 3x3
(32 filters) + relu -> flatten -> dense 10 (logits); softmax cross-entropy, Adam.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data_utils import load

import graphc as gc


def build():
    """logits [N, 10] and the loss of the network above, from x [N, 64] float32 raw pixels and
    labels [N] int32 class ids."""
    x = gc.input("x", ("N", 64))
    labels = gc.input("labels", ("N",), dtype="i32")
    image = gc.reshape(x * (1.0 / 16.0), ("N", 1, 8, 8))  # channels first, as ONNX and torch
    cnn = gc.Sequential(
        [
            gc.Conv(16, 3, padding="same", activation="relu"),
            gc.MaxPool(2),
            gc.Conv(32, 3, activation="relu"),
            gc.Flatten(),
            gc.Dense(10),
        ],
        name="cnn",
    )
    logits = cnn(image)
    return logits, gc.softmax_cross_entropy(logits, labels)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
    )
    args = ap.parse_args(argv)

    data = load("digits", seed=args.seed, labels="int", standardize=False)  # raw pixels
    logits, loss = build()
    t0 = time.perf_counter()
    model = gc.compile(logits, loss, gc.Adam(lr=args.lr), name="digits_cnn", seed=args.seed)
    print(f"compiled in {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    model.fit(
        data.x_train,
        data.y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        verbose=0,
    )
    print(f"trained {args.epochs} epochs in {time.perf_counter() - t0:.2f} s")
    result = model.evaluate(data.x_test, data.y_test)
    print(f"test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f}")

    os.makedirs(args.out, exist_ok=True)
    inproc = model.predict(data.x_test)
    export = model.export(os.path.join(args.out, "libdigits_cnn.so"))
    native = gc.load(export.library).predict(data.x_test)
    worst = float(np.max(np.abs(native - inproc)))
    ok = worst <= 1e-5 * max(1.0, float(np.max(np.abs(inproc))))
    print(f"wrote {export.library}: predictions match the model: {ok} (max |diff| {worst:.2e})")

    onnx_path = os.path.join(args.out, "digits_cnn.onnx")
    try:
        import onnx  # noqa: F401  (to_onnx writes with the onnx package: the [onnx] extra)
    except ImportError:
        print("no ONNX file written: the onnx package is not installed (pip install onnx)")
        return 0 if ok and result["accuracy"] >= 0.95 else 1
    model.to_onnx(onnx_path)
    try:
        import onnxruntime as ort
    except ImportError:
        print(f"wrote {onnx_path} (onnxruntime is not installed: not run)")
    else:
        sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        theirs = sess.run(None, {name: data.x_test.astype(np.float32)})[0]
        gap = float(np.max(np.abs(theirs - inproc)))
        ok_onnx = gap <= 1e-4 * max(1.0, float(np.max(np.abs(inproc))))
        print(f"wrote {onnx_path}: ONNX Runtime agrees: {ok_onnx} (max |diff| {gap:.2e})")
        ok = ok and ok_onnx
    if not ok or result["accuracy"] < 0.95:
        print("FAILED: accuracy below 0.95 or an export disagrees", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
