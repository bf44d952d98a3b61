"""DVC stage ``extract@<modality>``: frozen-CNN features of every manifest clip into ``extract.out/<modality>``.

The output is ``persist``-ed: a rerun with the same feature params resumes where it stopped; one with other
feature params replaces the cache (``overwrite=True``).
"""

import sys

from cmmvt import config, extract

if __name__ == "__main__":
    p = config.load()
    items, _ = extract.discover(p.data.manifest)
    summary = extract.run(items, p.extract, modality=sys.argv[1], overwrite=True, show_progress=False)[0]
    print(summary.line())
    sys.exit(1 if summary.succeeded == 0 and summary.failed else 0)
