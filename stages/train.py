"""DVC stage ``train``: the temporal classifier on cached features → ``models/classifier.pt``."""

import torch

from cmmvt import config
from cmmvt.train import loop

if __name__ == "__main__":
    p = config.load()
    config.dump(p, "models/classifier.params.yaml")
    result = loop.train(p, "models/classifier.pt", live_dir="reports/train")
    print(f"best val top-1 {result.best_val_top1:.3f} at epoch {result.best_epoch} ({result.epochs_run} epochs run, "
          f"torch threads: {torch.get_num_threads()})")
