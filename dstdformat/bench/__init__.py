"""Evaluation harness: our codecs and classical baselines measured side by side in one run.

Needs the ``bench`` extra (imagecodecs, matplotlib), imported only when a benchmark runs.
"""
