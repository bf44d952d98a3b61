"""DVC stage ``train``: the temporal classifier on cached features → ``models/classifier.pt``
(:func:`cmmvt.train.loop.stage`, which ``cmmvt train`` calls too).

Also runs as each process of ``torchrun … stages/train.py`` (data-parallel); rank 0 writes and prints.
"""

from cmmvt import config
from cmmvt.train import loop

if __name__ == "__main__":
    loop.stage(config.load())
