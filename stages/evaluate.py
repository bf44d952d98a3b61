"""DVC stage ``evaluate``: test-split metrics, per-class table and confusion matrix → ``reports/eval``."""

from cmmvt import config
from cmmvt.eval import evaluate

if __name__ == "__main__":
    p = config.load()
    m = evaluate.evaluate(p, p.paths.classifier, f"{p.paths.reports}/eval")
    print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()))
