"""DVC stage ``extract@<modality>``: frozen-CNN features of every manifest clip into ``extract.out/<modality>``
(:func:`cmmvt.features.extract.stage` with ``overwrite``, as ``cmmvt extract --manifest … --overwrite``).

An interrupted run resumes; a rerun after a completed one starts afresh. With ``extract.procs`` > 1 the script
runs itself again as that many torchrun processes, which share the clips.
"""

import sys

from cmmvt import config
from cmmvt.features import extract

if __name__ == "__main__":
    p = config.load()
    sys.exit(0 if extract.stage(p.extract, p.data.manifest, sys.argv[1], overwrite=True) else 1)
