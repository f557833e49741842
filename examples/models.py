"""Networks of the examples, as functions ``graphc dump`` and ``graphc compile`` can load."""

import graphc as gc


def digits():
    """64-32-10 relu MLP with softmax cross-entropy (the digits example's network)."""
    x = gc.input("x", ("N", 64))
    labels = gc.input("labels", ("N",), dtype="i32")
    logits = gc.dense(gc.dense(x, 32, "relu", name="fc1"), 10, name="fc2")
    return {
        "name": "digits",
        "outputs": logits,
        "loss": gc.softmax_cross_entropy(logits, labels),
        "optimizer": gc.Adam(lr=1e-2),
    }


def breast_cancer():
    """30-16-1 tanh MLP with binary cross-entropy from logits."""
    x = gc.input("x", ("N", 30))
    y = gc.input("y", ("N", 1))
    logit = gc.dense(gc.dense(x, 16, "tanh", name="fc1"), 1, name="fc2")
    return {
        "name": "breast_cancer",
        "outputs": logit,
        "loss": gc.binary_cross_entropy(logit, y),
        "optimizer": gc.SGD(lr=0.05, momentum=0.9),
    }


def diabetes():
    """10-16-1 relu MLP regression with mean squared error."""
    x = gc.input("x", ("N", 10))
    y = gc.input("y", ("N", 1))
    pred = gc.dense(gc.dense(x, 16, "relu", name="fc1"), 1, name="fc2")
    return {
        "name": "diabetes",
        "outputs": pred,
        "loss": gc.mean_squared_error(pred, y),
        "optimizer": gc.Adam(lr=1e-2),
    }
