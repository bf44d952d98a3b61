"""Evaluation and inference: metrics, whole-clip inference, the test report, ``predict`` on new videos."""
