"""ONNX in and out: a scikit-learn MLP on the handwritten-digits data becomes a graphc library,
is fine-tuned natively by graphc, and goes back to ONNX.

1. train sklearn's MLPClassifier (64-32-10, relu) on 80% of examples/data/digits.csv.gz
2. convert it to ONNX with skl2onnx
3. import it with gc.from_onnx, compile it, export it to a shared library (.so + .h) and check
   that the library predicts the classes scikit-learn predicts
4. fine-tune the imported network with graphc (Adam, softmax cross-entropy from its logits)
5. write the fine-tuned network as ONNX and check ONNX Runtime gives graphc's probabilities

Needs: pip install -e ".[onnx]" scikit-learn skl2onnx onnxruntime (all in the test extra).
Run: python examples/onnx_sklearn.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data_utils import load

import graphc as gc


def logits_name(m) -> str:
    """The value the classifier's Softmax reads: the network's logits."""
    for node in m.graph.node:
        if node.op_type == "Softmax":
            return node.input[0]
    raise SystemExit("the converted model has no Softmax")


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"),
        help="folder for the .onnx, .so and .h files (default: examples/out, as digits.py)",
    )
    ap.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs (default 5)")
    args = ap.parse_args(argv)
    out = args.out
    os.makedirs(out, exist_ok=True)

    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    data = load("digits", seed=0, labels="int")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the short training
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0)
        clf.fit(data.x_train, data.y_train)
        onx = to_onnx(clf, data.x_train[:1], options={id(clf): {"zipmap": False}})
    sk_acc = float((clf.predict(data.x_test) == data.y_test).mean())
    onnx_path = os.path.join(out, "digits_sklearn.onnx")
    with open(onnx_path, "wb") as f:
        f.write(onx.SerializeToString())
    print(f"scikit-learn MLPClassifier: test accuracy {sk_acc:.4f}; wrote {onnx_path}")

    # import the network up to its logits; probabilities are the softmax of them
    imp = gc.from_onnx(onnx_path, outputs=[logits_name(onx)], name="digits_onnx")
    logits = imp.outputs[0]
    probs = gc.softmax(logits)
    labels = gc.input("labels", ("N",), dtype="i32")
    model = gc.compile(
        probs, gc.softmax_cross_entropy(logits, labels), gc.Adam(lr=1e-3), name=imp.name
    )
    lib_path = os.path.join(out, "libdigits_onnx.so")
    model.export(lib_path)
    lib = gc.load(lib_path)
    lib_pred = np.asarray(lib.predict(data.x_test)).argmax(axis=1)
    same = bool(np.array_equal(lib_pred, clf.predict(data.x_test)))
    p_diff = float(np.abs(lib.predict(data.x_test) - clf.predict_proba(data.x_test)).max())
    print(
        f"library {lib_path}: predictions equal scikit-learn's: {same} "
        f"(max probability difference {p_diff:.1e})"
    )

    before = model.evaluate(data.x_test, data.y_test)
    model.fit(data.x_train, data.y_train, epochs=args.epochs, batch_size=32, verbose=0)
    after = model.evaluate(data.x_test, data.y_test)
    print(
        f"fine-tuned with graphc for {args.epochs} epochs: test accuracy "
        f"{before['accuracy']:.4f} -> {after['accuracy']:.4f}, "
        f"loss {before['loss']:.4f} -> {after['loss']:.4f}"
    )

    back = os.path.join(out, "digits_finetuned.onnx")
    model.to_onnx(back)
    import onnxruntime as ort

    sess = ort.InferenceSession(back, providers=["CPUExecutionProvider"])
    ort_probs = sess.run(None, {sess.get_inputs()[0].name: data.x_test})[0]
    diff = float(np.abs(ort_probs - model.predict(data.x_test)).max())
    print(f"wrote {back}: ONNX Runtime matches graphc (max abs difference {diff:.1e})")
    return {
        "sklearn_accuracy": sk_acc,
        "library_matches_sklearn": float(same),
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "loss_before": before["loss"],
        "loss_after": after["loss"],
        "onnxruntime_max_diff": diff,
    }


if __name__ == "__main__":
    main()
