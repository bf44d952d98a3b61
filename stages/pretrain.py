"""DVC stage ``pretrain``: cross-modal self-supervised encoders (no labels) → ``models/pretrain.pt``."""

from cmmvt import config
from cmmvt.selfsup import pretrain

if __name__ == "__main__":
    p = config.load()
    r = pretrain.pretrain(p, "models/pretrain.pt", "data/prototypes.h5", live_dir="reports/pretrain")
    print(pretrain.describe(r))
