"""Tests of the ablation harness: splits, baselines, runner, report and publishing."""
