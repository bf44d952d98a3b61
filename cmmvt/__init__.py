"""cmmvt: the Contrastive Multi-Modal Video Transformer.

Audio-visual video classification on cached frozen-CNN features: ``extract`` decodes each video once
and stores per-frame video and log-mel audio embeddings in HDF5; everything after it (prototypes,
cross-modal pretraining, a Longformer-style temporal classifier, evaluation) reads only the caches.
"""

__version__ = "0.1.0"
