"""`run_demo`: the smoke test trains both twins through the Trainer on synthetic features."""

import pytest

from reslstm_tf.training.demo import run_demo


@pytest.mark.slow
def test_demo_trains_the_preset_and_its_plain_lstm_twin():
    results = run_demo("res2", epochs=1, seed=1)
    assert list(results) == ["res2", "lstm2"]
    # The last epoch's running training accuracy over 64 videos, in steps of 1/64.
    assert all(0.0 <= accuracy <= 1.0 for accuracy in results.values()), results
    assert all((accuracy * 64) % 1 == 0 for accuracy in results.values()), results
