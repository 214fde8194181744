"""The logistic-regression baseline (`reslstm_tf.experiments.baselines`)."""

import numpy as np

from reslstm_tf.experiments.baselines import LogisticRegression


def _newton_binary_reference(z, y, penalty, iterations=50):
    """Binary logistic regression, min mean log-loss + penalty * |w|^2, by Newton's method."""
    a = np.hstack([z, np.ones((len(z), 1))])
    theta = np.zeros(a.shape[1])
    reg = np.full(a.shape[1], 2 * penalty)
    reg[-1] = 0.0  # the bias is not penalised
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-a @ theta))
        grad = a.T @ (p - y) / len(y) + reg * theta
        hess = (a * (p * (1 - p))[:, None]).T @ a / len(y) + np.diag(reg)
        theta -= np.linalg.solve(hess, grad)
    return theta


def test_logistic_regression_matches_newton_reference_on_separable_data():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 1, (20, 3)), rng.normal(2, 1, (20, 3))])
    y = np.array([0] * 20 + [1] * 20)
    l2 = 0.1
    model = LogisticRegression(l2=l2, steps=5000, tolerance=1e-10).fit(x, y)
    assert np.mean(model.predict(x) == y) == 1.0  # separable: every training clip right
    # Two-class softmax with l2/2 (|w0|^2 + |w1|^2) is binary logistic regression on
    # w = w1 - w0 with penalty l2/4 |w|^2 (the optimum has w1 = -w0).
    z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    theta = _newton_binary_reference(z, y, penalty=l2 / 4)
    reference = 1 / (1 + np.exp(-(z @ theta[:-1] + theta[-1])))
    np.testing.assert_allclose(model.predict_proba(x)[:, 1], reference, atol=1e-6)


def test_logistic_regression_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    z, y = rng.normal(size=(9, 4)), rng.integers(0, 3, 9)
    model = LogisticRegression(l2=0.3)
    weights, bias = rng.normal(size=(4, 3)), rng.normal(size=3)
    _, grad_w, grad_b = model.objective_and_gradients(z, y, weights, bias)
    eps = 1e-6
    for index in np.ndindex(weights.shape):
        step = np.zeros_like(weights)
        step[index] = eps
        plus = model.objective_and_gradients(z, y, weights + step, bias)[0]
        minus = model.objective_and_gradients(z, y, weights - step, bias)[0]
        assert abs((plus - minus) / (2 * eps) - grad_w[index]) < 1e-6
    for k in range(3):
        step = np.eye(3)[k] * eps
        plus = model.objective_and_gradients(z, y, weights, bias + step)[0]
        minus = model.objective_and_gradients(z, y, weights, bias - step)[0]
        assert abs((plus - minus) / (2 * eps) - grad_b[k]) < 1e-6
