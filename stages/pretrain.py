"""DVC stage ``pretrain``: cross-modal self-supervised encoders (no labels) → ``models/pretrain.pt``
(:func:`cmmvt.selfsup.pretrain.stage`, which ``cmmvt pretrain`` calls too).

Also runs as each process of ``torchrun … stages/pretrain.py`` (data-parallel); rank 0 writes and prints.
"""

from cmmvt import config
from cmmvt.selfsup import pretrain

if __name__ == "__main__":
    pretrain.stage(config.load())
