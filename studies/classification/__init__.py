"""Omniglot character classification with timm tasks: CE, KD, FitNet, RKD and KD + RKD.

``python -m studies.classification`` (see ``--help``); :mod:`.study` trains and records the runs,
:mod:`.report` renders the table and the curves (``classification_curves.png`` next to
``CLASSIFICATION.md``); the records are in ``results/``.
"""
