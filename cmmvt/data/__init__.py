"""The clips and their labels: the embedded synthetic dataset and manifests of any folder or CSV."""
