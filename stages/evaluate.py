"""DVC stage ``evaluate``: test-split metrics, per-class table and confusion matrix → ``reports/eval``.

Also runs as each process of ``torchrun … stages/evaluate.py`` (clips shared); rank 0 writes and prints.
"""

from cmmvt import config, distributed
from cmmvt.eval import evaluate

if __name__ == "__main__":
    p = config.load()
    m = evaluate.evaluate(p, p.paths.classifier, f"{p.paths.reports}/eval")
    if distributed.from_env().lead:
        print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()))
