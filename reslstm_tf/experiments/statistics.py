"""Statistics that can say "no difference": paired differences and McNemar's test.

Two recipes run on the same folds and seeds give paired accuracies; their difference is
judged by its own spread, not by each recipe's (`paired_difference`: the mean difference
with a Student-t confidence interval over the pairs). Cross-validation's pairs are not
independent (folds share training videos, seeds share validation videos), so for them the
variance is corrected as Nadeau & Bengio (2003) and Bouckaert & Frank (2004) do for repeated
k-fold CV: (1/J + n_test/n_train) s^2 instead of s^2 / J, which widens the interval. Pooled
out-of-fold predictions of two classifiers on the same videos are judged by the videos on
which they disagree (`mcnemar`: the exact two-sided binomial test on the discordant counts).
`compare` gives both and says in words whether the difference is significant.

Only the standard library and numpy: the t quantile is found by bisection on the t CDF,
itself the regularised incomplete beta function (Numerical Recipes' continued fraction).
"""

import dataclasses
import math

import numpy as np


def _beta_fraction(a, b, x):
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):  # fmt: skip
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a, b, x):
    """The regularised incomplete beta function I_x(a, b), for x in [0, 1]."""
    if x <= 0.0 or x >= 1.0:
        return float(x >= 1.0)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(log_front + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t, dof):
    """The CDF of Student's t distribution with `dof` degrees of freedom."""
    tail = 0.5 * incomplete_beta(dof / 2.0, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(probability, dof):
    """The `probability` quantile of Student's t with `dof` degrees of freedom (bisection)."""
    low, high = -1e3, 1e3
    for _ in range(200):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if t_cdf(middle, dof) < probability else (low, middle)
    return 0.5 * (low + high)


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """The mean of paired differences a - b with its confidence interval.

    Attributes:
        mean: the mean difference.
        low, high: the confidence interval's bounds.
        pairs: how many pairs.
        confidence: the interval's level, e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    pairs: int
    confidence: float

    @property
    def significant(self):
        """True when the interval excludes 0."""
        return self.low > 0 or self.high < 0


def paired_difference(a, b, confidence=0.95, test_train_ratio=None):
    """The mean paired difference of `a` - `b` with a Student-t confidence interval.

    Args:
        a, b: equal-length sequences of scores on the same pairs (e.g. folds x seeds).
        confidence: the interval's level.
        test_train_ratio: n_test / n_train of cross-validation pairs, for the corrected
            variance (module docstring); None treats the pairs as independent.

    Raises:
        ValueError: the sequences differ in length or hold fewer than 2 pairs.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(
            "paired_difference needs two equal-length sequences of at least 2 scores. "
            f"Received shapes {a.shape} and {b.shape}"
        )
    diff = a - b
    mean = float(diff.mean())
    factor = 1.0 / len(diff) + (test_train_ratio or 0.0)
    half = t_quantile(0.5 + confidence / 2.0, len(diff) - 1) * diff.std(ddof=1) * factor**0.5
    return PairedDifference(mean, mean - half, mean + half, len(diff), confidence)


@dataclasses.dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on two classifiers' predictions of the same examples.

    Attributes:
        only_a: examples only the first classifier gets right.
        only_b: examples only the second gets right.
        p_value: the exact two-sided binomial p-value of only_a vs only_b.
    """

    only_a: int
    only_b: int
    p_value: float


def mcnemar(correct_a, correct_b):
    """McNemar's exact test: do two classifiers err on the same examples equally often?

    Args:
        correct_a, correct_b: booleans per example (pooled out-of-fold), the same examples.
    """
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError(
            f"mcnemar needs the same examples. Received {correct_a.shape} and {correct_b.shape}"
        )
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    n, k = only_a + only_b, min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n if n else 1.0
    return McNemar(only_a, only_b, min(1.0, 2.0 * tail))


def compare(
    name_a, name_b, scores_a, scores_b, correct_a=None, correct_b=None, alpha=0.05, ratio=None
):
    """Compares two recipes: the paired difference, McNemar when predictions are given, words.

    `ratio` is cross-validation's n_test / n_train (`paired_difference`'s correction).

    Returns:
        dict: a, b, difference (mean, low, high, pairs), mcnemar (only_a, only_b, p_value)
        or None, significant, verdict (a sentence).
    """
    diff = paired_difference(scores_a, scores_b, 1.0 - alpha, ratio)
    test = mcnemar(correct_a, correct_b) if correct_a is not None else None
    significant = diff.significant and (test is None or test.p_value < alpha)
    sign = "above" if diff.mean > 0 else "below"
    interval = f"{100 * diff.mean:+.1f} points, {100 * (1 - alpha):.0f}% CI "
    interval += f"[{100 * diff.low:+.1f}, {100 * diff.high:+.1f}] over {diff.pairs} pairs"
    if test is not None:
        interval += f"; McNemar p = {test.p_value:.3g} ({test.only_a} vs {test.only_b} videos)"
    verdict = (
        f"{name_a} is significantly {sign} {name_b} ({interval})"
        if significant
        else f"no significant difference between {name_a} and {name_b} ({interval})"
    )
    return {
        "a": name_a,
        "b": name_b,
        "difference": dataclasses.asdict(diff),
        "mcnemar": dataclasses.asdict(test) if test is not None else None,
        "significant": bool(significant),
        "verdict": verdict,
    }
