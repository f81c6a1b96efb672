"""Few-shot study of the RKD paper: prototypical networks on Omniglot, self-distilled with RKD.

``python -m studies.fewshot`` (see ``--help``); :mod:`.study` trains and records the runs,
:mod:`.report` fills ``FEWSHOT.md`` (and ``fewshot_curves.png`` next to it); the records are in
``results/``.
"""
