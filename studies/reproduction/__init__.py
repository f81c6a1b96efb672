"""The reproduction study of the RKD paper's metric-learning claims, behind ``python -m studies.reproduction``
(plan, train and record the runs) and ``python -m studies.reproduction.report`` (render the report).

What the study trains:

* :mod:`.methods`: the methods (triplet, FitNet, DarkRank, RKD-D/A/DA, the combinations, self-distillation);
* :mod:`.recipe`: the recipe a study directory holds, and the learning-rate schedules;
* :mod:`.plan`: the runs (jobs), the grids, and each run's training config;
* :mod:`.curves`: the curve runs and the plateau rule that turns their curves into budgets;
* :mod:`.cost`: the cost model behind the time estimates.

How it runs:

* :mod:`.study_dir`: the study directory (``study.json``, ``records.jsonl``), what makes it resumable;
* :mod:`.worker`: one run in a worker process, and its record;
* :mod:`.scheduler`: the process pool that runs a study's jobs and records them as they finish;
* :mod:`.rendering`: the report rendered during and after a study;
* :mod:`.cli`, :mod:`.selection`, :mod:`.commands`: the command line, the grid it selects, what each command does.

The report:

* :mod:`.stats`: the records indexed by method, L2 and size, and the statistics over seeds;
* :mod:`.tables`, :mod:`.claims`, :mod:`.plots`: its tables, the paper's claims checked, its figures;
* :mod:`.report_sections`, :mod:`.results_report`: its text sections and the assembled ``RESULTS.md``;
* :mod:`.curves_report`: ``budgets.json``, ``curves.png`` and ``CURVES.md`` of a curves directory;
* :mod:`.formatting`: durations, schedules and paths as the printed output and the report write them.

Run it from the repository root: ``python -m studies.reproduction`` (the study) and
``python -m studies.reproduction.report`` (the report).
"""

from pathlib import Path

#: the repository root: default directories and the paths the report shows are relative to it
REPO = Path(__file__).resolve().parents[2]
