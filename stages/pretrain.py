"""DVC stage ``pretrain``: cross-modal self-supervised encoders (no labels) → ``models/pretrain.pt``.

Also runs as each process of ``torchrun … stages/pretrain.py`` (data-parallel); rank 0 writes and prints.
"""

from cmmvt import config, distributed
from cmmvt.selfsup import pretrain

if __name__ == "__main__":
    p = config.load()
    r = pretrain.pretrain(p, p.paths.pretrained, p.paths.prototypes, live_dir=f"{p.paths.reports}/pretrain")
    if distributed.from_env().lead:
        print(pretrain.describe(r))
