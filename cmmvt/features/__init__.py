"""The feature stage: frozen CNNs over frames and log-mel images, streamed into fingerprinted HDF5 caches."""
