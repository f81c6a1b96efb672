"""The studies of rkd-pml: experiments run with the library's public API, with their records and reports.

* :mod:`studies.reproduction`: the RKD paper's metric-learning claims (``python -m studies.reproduction``,
  report: ``python -m studies.reproduction.report``); results and ``RESULTS.md``/``CURVES.md`` in
  ``studies/reproduction/``;
* :mod:`studies.classification`: Omniglot character classification with timm tasks
  (``python -m studies.classification``), ``CLASSIFICATION.md``;
* :mod:`studies.fewshot`: prototypical networks self-distilled with RKD (``python -m studies.fewshot``),
  ``FEWSHOT.md``;
* :mod:`studies.speed_quality`: whether the fast training settings cost quality (``python -m studies.speed_quality``);
* :mod:`studies.device`: the ``--device`` option they share.

Each study keeps its records in its ``results/`` folder and resumes from them. Run them from the
repository root (the package is not part of the installed wheel).
"""
