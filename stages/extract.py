"""DVC stage ``extract@<modality>``: frozen-CNN features of every manifest clip into ``extract.out/<modality>``.

An interrupted run resumes; a rerun after a completed one starts afresh (see :func:`cmmvt.features.extract.run_stage`).
"""

import sys

from cmmvt import config
from cmmvt.features import extract

if __name__ == "__main__":
    p = config.load()
    summary = extract.run_stage(p.extract, p.data.manifest, sys.argv[1])
    print(summary.line())
    sys.exit(1 if summary.succeeded == 0 and summary.failed else 0)
