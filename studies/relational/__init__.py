"""The relational-distillation study, behind ``python -m studies.relational``: RKD next to the
relational losses it is compared with, and students that search their teacher's index.

On Omniglot at the converged recipe of the reproduction study (its ``study.json``: data, teacher,
students' model and schedule, budgets chosen from curves), one teacher per seed, and students of
RKD-DA, RKD-A, PKT, SP, CC, relaxed contrastive, FitNet and RKD-DA + compat (a coordinate term
towards the teacher's embeddings), all as wide as the teacher so that their queries can search a
gallery indexed with it. Each student's record holds the symmetric test Recall@K at the epoch
chosen on the validation split and the asymmetric one (its queries, its teacher's gallery).

The runs, their records and the scheduler are the reproduction study's
(:mod:`studies.reproduction`); this package holds only what differs:

* :mod:`.cli`: the command line, the recipe taken from the converged study, the runs;
* :mod:`.report`: ``RELATIONAL.md``, the tables with paired margins, rendered from the records.
"""

from pathlib import Path

from ..reproduction import REPO

#: the methods of the study, in the order of its tables (the first is the reference of the margins)
RELATIONAL_METHODS = ("rkd-da", "rkd-a", "pkt", "sp", "cc", "relaxed-contrastive", "fitnet", "rkd-da-compat")
#: a student of study seed s trains with seed s + this and distils the teacher trained with seed s
STUDENT_SEED_OFFSET = 100
#: the study whose recipe this one repeats
CONVERGED = REPO / "studies" / "reproduction" / "results" / "reproduce-converged"
DEFAULT_OUT = REPO / "studies" / "relational" / "results" / "relational"
DEFAULT_QUICK_OUT = REPO / "studies" / "relational" / "results" / "relational-quick"
#: the report of the study (the report of another --out goes into that directory)
REPORT_MD = "RELATIONAL.md"
DEFAULT_REPORT = Path(__file__).resolve().parent / REPORT_MD
