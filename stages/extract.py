"""DVC stage ``extract@<modality>``: frozen-CNN features of every manifest clip into ``extract.out/<modality>``.

An interrupted run resumes; a rerun after a completed one starts afresh (see :func:`cmmvt.features.extract.run_stage`).
With ``extract.procs`` > 1 the script runs itself again as that many torchrun processes, which share the clips.
"""

import sys

from cmmvt import config, distributed
from cmmvt.features import extract

if __name__ == "__main__":
    p = config.load()
    launched = distributed.relaunch(p.extract.procs)
    if launched is not None:
        sys.exit(launched)
    summary = extract.run_stage(p.extract, p.data.manifest, sys.argv[1])
    if distributed.from_env().lead:
        print(summary.line())
    sys.exit(1 if summary.succeeded == 0 and summary.failed else 0)
