"""Independent numpy re-implementations used as test references."""

import numpy as np


def sigmoid(x):
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def lstm_sequence(x, kernel, recurrent_kernel, bias, h0=None, c0=None):
    """Runs one LSTM over x (B, T, D) with Keras' gate order (i, f, c, o); returns (B, T, H)."""
    batch, steps, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((batch, units)) if h0 is None else h0
    c = np.zeros((batch, units)) if c0 is None else c0
    outputs = []
    for t in range(steps):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = np.split(z, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs, axis=1)


def residual_lstm(x, lstm_weights, residual=True, projection=None):
    """Stacked LSTMs with x^l = LSTM_l(x^{l-1}) + x^{l-1}; `projection` maps the first shortcut."""
    x = x.astype(np.float64)
    for index, (kernel, recurrent_kernel, bias) in enumerate(lstm_weights):
        h = lstm_sequence(x, kernel, recurrent_kernel, bias)
        if residual:
            shortcut = x @ projection if (index == 0 and projection is not None) else x
            h = h + shortcut
        x = h
    return x


def softmax(x, axis=-1):
    """Numerically stable softmax."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
