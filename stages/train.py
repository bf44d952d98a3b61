"""DVC stage ``train``: the temporal classifier on cached features → ``models/classifier.pt``."""

import torch

from cmmvt import config
from cmmvt.train import loop

if __name__ == "__main__":
    p = config.load()
    config.dump(p, p.paths.classifier_params)
    result = loop.train(p, p.paths.classifier, live_dir=f"{p.paths.reports}/train",
                        pretrained=p.paths.pretrained)
    print(f"best val top-1 {result.best_val_top1:.3f} at epoch {result.best_epoch} ({result.epochs_run} epochs run, "
          f"torch threads: {torch.get_num_threads()})")
