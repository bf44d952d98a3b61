"""DVC stage ``evaluate``: test-split metrics, per-class table and confusion matrix → ``reports/eval``
(:func:`cmmvt.eval.evaluate.stage`, which ``cmmvt evaluate`` calls too).

Also runs as each process of ``torchrun … stages/evaluate.py`` (clips shared); rank 0 writes and prints.
"""

from cmmvt import config
from cmmvt.eval import evaluate

if __name__ == "__main__":
    evaluate.stage(config.load())
