"""DVC stage ``prototypes``: k-means per modality → ``data/prototypes.h5``; NMI/purity → ``reports/prototypes``."""

from cmmvt import config
from cmmvt.selfsup import prototypes

if __name__ == "__main__":
    p = config.load()
    m = prototypes.build(p, p.paths.prototypes, f"{p.paths.reports}/prototypes/metrics.json")
    print(", ".join(f"{k} {v:.3f}" for k, v in m.items()))
