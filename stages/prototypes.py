"""DVC stage ``prototypes``: k-means per modality → ``data/prototypes.h5``; NMI/purity → ``reports/prototypes``
(:func:`cmmvt.selfsup.prototypes.stage`, which ``cmmvt prototypes`` calls too)."""

from cmmvt import config
from cmmvt.selfsup import prototypes

if __name__ == "__main__":
    prototypes.stage(config.load())
