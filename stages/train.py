"""DVC stage ``train``: the temporal classifier on cached features → ``models/classifier.pt``.

Also runs as each process of ``torchrun … stages/train.py`` (data-parallel); rank 0 writes and prints.
"""

import torch

from cmmvt import config, distributed
from cmmvt.train import loop

if __name__ == "__main__":
    p = config.load()
    lead = distributed.from_env().lead
    if lead:
        config.dump(p, p.paths.classifier_params)
    result = loop.train(p, p.paths.classifier, live_dir=f"{p.paths.reports}/train", pretrained=p.paths.pretrained)
    if lead:
        print(f"{result.line()}, torch threads: {torch.get_num_threads()}")
