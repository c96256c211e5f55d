"""Evaluation harness: our codecs and classical baselines measured side by side in one run.

Needs the ``bench`` extra (imagecodecs, matplotlib) and PyAV for the video codecs (AV1, HEVC,
VP9), imported only when a benchmark runs. Reports carry BD-rates against SPERR and AV1.
"""
