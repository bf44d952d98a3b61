"""DVC stage ``prepare``: the manifest (video_id, path, label, split) from ``data.*``."""

from cmmvt import config
from cmmvt.data import manifest

if __name__ == "__main__":
    p = config.load()
    report = manifest.prepare(p.data, seed=p.data.seed)
    print(manifest.summary(report, p.data.manifest))
