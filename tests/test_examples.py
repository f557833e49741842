"""The examples train on real data and reach the figures promised in the README (held-out 20%)."""

from __future__ import annotations

import os
import subprocess
import sys

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)


def test_breast_cancer_reaches_accuracy_095() -> None:
    import breast_cancer

    assert breast_cancer.main(verbose=0)["accuracy"] >= 0.95


def test_diabetes_reaches_r2_035() -> None:
    import diabetes

    assert diabetes.main(verbose=0)["r2"] >= 0.35


def test_perceptron_learns_and_but_not_xor_until_a_hidden_layer() -> None:
    import perceptron

    r = perceptron.main()
    assert r["perceptron AND"] == 1.0
    assert r["perceptron XOR"] < 1.0
    assert r["hidden layer XOR"] == 1.0
    # the README's table states the figures the script prints
    readme = open(os.path.join(os.path.dirname(EXAMPLES), "README.md")).read()
    row = next(line for line in readme.splitlines() if "`examples/perceptron.py`" in line)
    assert f"AND {r['perceptron AND']:.1f}" in row and f"XOR {r['perceptron XOR']:.2f}" in row


def _run_example(script: str, out: os.PathLike | str) -> tuple[str, float]:
    """Run examples/``script`` with ``--out out``; (its stdout, the test accuracy it printed).
    Fails the test when the script exits with an error."""
    proc = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, script), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, float(proc.stdout.split("test accuracy ")[1].split()[0])


def test_digits_main_job_reaches_095_and_library_matches(tmp_path) -> None:
    """The README's main job, end to end: train, evaluate, export, load the .so back."""
    stdout, acc = _run_example("digits.py", tmp_path)
    assert "library predictions match the in-process model: True" in stdout
    assert acc >= 0.95


def test_digits_cnn_reaches_095_and_its_exports_agree(tmp_path) -> None:
    """The convolutional example: held-out accuracy and both exports (the .so, and the ONNX
    file run by ONNX Runtime where installed) equal to the in-process predictions."""
    stdout, acc = _run_example("digits_cnn.py", tmp_path)
    assert "predictions match the model: True" in stdout
    assert acc >= 0.95
