"""DVC stage ``synth``: the embedded synthetic audio-visual dataset (params ``data.seed``, ``data.synth``)."""

from cmmvt import config
from cmmvt.data import synth

if __name__ == "__main__":
    p = config.load()
    synth.make_dataset(p.paths.synth, p.data.synth, seed=p.data.seed, progress=True)
