"""DVC stage ``pretrain``: cross-modal self-supervised encoders (no labels) → ``models/pretrain.pt``."""

from cmmvt import config
from cmmvt.selfsup import pretrain

if __name__ == "__main__":
    p = config.load()
    r = pretrain.pretrain(p, p.paths.pretrained, p.paths.prototypes, live_dir=f"{p.paths.reports}/pretrain")
    print(pretrain.describe(r))
