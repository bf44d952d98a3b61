"""DVC stage ``synth``: the embedded synthetic audio-visual dataset (params ``data.seed``, ``data.synth``), or an
empty folder when ``data.source`` is a user's own data."""

from cmmvt import config
from cmmvt.data import synth

if __name__ == "__main__":
    p = config.load()
    synth.stage(p.data, p.paths.synth)
