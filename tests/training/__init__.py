"""Tests of training, resume, multi-worker training and evaluation."""
