"""The non-recurrent baseline: multinomial logistic regression on mean-pooled features.

Why numpy and not scikit-learn: scikit-learn is not a dependency of the package, and one
small, strictly convex model does not justify adding it (with scipy, joblib and
threadpoolctl) to every install. The objective is the one of scikit-learn's multinomial
`LogisticRegression(C=1 / (l2 * N))` on standardised inputs, so both reach the same
optimum; the fit here is about 40 lines, deterministic, and checked in the tests against a
Newton-method reference and finite-difference gradients.
"""

import numpy as np

from reslstm_tf.evaluate import softmax
from reslstm_tf.experiments.config import AblationError


class LogisticRegression:
    """Multinomial logistic regression with L2 penalty, fitted by full-batch gradient descent.

    Minimises ``mean_i CE(softmax(W x_i + b), y_i) + l2 / 2 * ||W||^2`` (bias not
    penalised) on standardised inputs (the mean and std of the training set) with
    Nesterov momentum. The objective is strictly convex, so the fit is deterministic and
    does not depend on a seed.

    Args:
        l2: float >= 0, the penalty on the weights. Defaults to 1e-2.
        learning_rate: float, the gradient step. Defaults to 0.5.
        steps: int, gradient steps. Defaults to 2000.
        tolerance: stop when the gradient's max-norm falls below this. Defaults to 1e-7.
    """

    def __init__(self, l2=1e-2, learning_rate=0.5, steps=2000, tolerance=1e-7):
        if l2 < 0:
            raise AblationError(f"l2 must be >= 0. Received: l2={l2!r}")
        self.l2 = float(l2)
        self.learning_rate = float(learning_rate)
        self.steps = int(steps)
        self.tolerance = float(tolerance)
        self.weights = self.bias = self.mean = self.scale = None

    def _standardise(self, x):
        return (np.asarray(x, np.float64) - self.mean) / self.scale

    def objective_and_gradients(self, z, y, weights, bias):
        """Returns (loss, dW, db) of the penalised objective on standardised inputs `z`."""
        logits = z @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        n = len(y)
        loss = -log_p[np.arange(n), y].mean() + 0.5 * self.l2 * np.sum(weights**2)
        delta = np.exp(log_p)
        delta[np.arange(n), y] -= 1.0
        delta /= n
        return loss, z.T @ delta + self.l2 * weights, delta.sum(axis=0)

    def fit(self, x, y, num_classes=None):
        """Fits the model to features `x` (N, D) and int labels `y` (N,); returns self."""
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.int64)
        if x.ndim != 2 or len(x) != len(y):
            raise AblationError(f"x must be (N, D) and y (N,). Received x{x.shape} and y{y.shape}")
        num_classes = int(num_classes or y.max() + 1)
        self.mean = x.mean(axis=0)
        self.scale = x.std(axis=0) + 1e-6
        z = self._standardise(x)
        weights = np.zeros((x.shape[1], num_classes))
        bias = np.zeros(num_classes)
        velocity_w, velocity_b = np.zeros_like(weights), np.zeros_like(bias)
        momentum = 0.9
        # A safe step for the smooth part: the Hessian of the mean CE is bounded by
        # ||Z||_2^2 / (2N) (softmax curvature <= 1/2), plus l2.
        lipschitz = np.linalg.norm(z, 2) ** 2 / (2 * len(z)) + self.l2
        step = min(self.learning_rate, 1.0 / lipschitz)
        for _ in range(self.steps):
            look_w = weights + momentum * velocity_w
            look_b = bias + momentum * velocity_b
            _, grad_w, grad_b = self.objective_and_gradients(z, y, look_w, look_b)
            velocity_w = momentum * velocity_w - step * grad_w
            velocity_b = momentum * velocity_b - step * grad_b
            weights, bias = weights + velocity_w, bias + velocity_b
            if max(np.abs(grad_w).max(), np.abs(grad_b).max()) < self.tolerance:
                break
        self.weights, self.bias = weights, bias
        return self

    def predict_proba(self, x):
        """Returns class probabilities (N, C) for features `x` (N, D)."""
        if self.weights is None:
            raise AblationError("LogisticRegression.predict_proba called before fit")
        return softmax(self._standardise(x) @ self.weights + self.bias)

    def predict(self, x):
        """Returns the predicted class index (N,) for features `x` (N, D)."""
        return self.predict_proba(x).argmax(axis=1)


def mean_pooled_accuracies(
    features, labels, train_idx, val_idx, num_classes=None, return_predictions=False
):
    """Fits `LogisticRegression` on mean-pooled features; returns (train, val) accuracy.

    Args:
        features: float array (N, K, d), the cached segment features.
        labels: int array (N,) of class indices.
        train_idx, val_idx: index arrays of the training and the validation clips.
        num_classes: number of classes C (default: the largest label + 1).
        return_predictions: also return the validation clips' predicted classes.

    Returns:
        (train accuracy, val accuracy), floats in [0, 1]; (train, val, val predictions)
        with `return_predictions`.
    """
    pooled = np.asarray(features).mean(axis=1)
    y_train, y_val = labels[train_idx], labels[val_idx]
    model = LogisticRegression().fit(pooled[train_idx], y_train, num_classes)
    train_acc = float(np.mean(model.predict(pooled[train_idx]) == y_train))
    predicted = model.predict(pooled[val_idx])
    val_acc = float(np.mean(predicted == y_val))
    return (train_acc, val_acc, predicted) if return_predictions else (train_acc, val_acc)
