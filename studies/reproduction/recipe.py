"""The recipe: everything that decides what a run computes (a study directory holds one).

Every run has ``iterations`` split into ``evals`` equal epochs, each ending with an evaluation of
the validation and the test split; the learning rate is multiplied by ``lr_gamma`` after the
given fractions of the budget (students: x0.1 after 50 % and 75 %, as the paper's 80-epoch
student schedule; teacher: x0.5 after 25/40, 30/40, 35/40). Self-distillation trains
``self_scale`` (2) times the teacher's iterations, the paper's ratio.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

#: the first study's budgets, the unit of ``--budget-scale``
BASE_STUDENT_ITERATIONS = 120
BASE_TEACHER_ITERATIONS = 800
#: the paper's teacher schedule (x0.5 after epochs 25, 30, 35 of 40) as fractions of the budget
TEACHER_DROPS = (25 / 40, 30 / 40, 35 / 40)
#: the paper's student schedule (x0.1 after epochs 40, 60 of 80)
STUDENT_DROPS = (0.5, 0.75)


@dataclass
class Recipe:
    """Everything that decides what a run computes; a study directory holds one recipe."""

    dataset: str = "omniglot"
    root: str | None = None
    image_size: int = 32
    #: the RKD recipe scaled to the image size: resize to S*256/224, random S crop, horizontal flip
    train_transform: str = "paper"
    #: half of the training classes select the epoch (34 of Omniglot's 68 training characters)
    val_fraction: float = 0.5
    batch_size: int = 64
    m_per_class: int = 4
    weight_decay: float = 1e-5
    #: autocast precision and memory format of every run (``--fast``: bf16, channels-last)
    precision: str = "fp32"
    channels_last: bool = False
    # teacher
    teacher_model: str = "resnet10t"
    teacher_dim: int = 512
    teacher_iterations: int = 2400
    #: evaluations per teacher run (its epochs: one evaluation at the end of each)
    teacher_evals: int = 40
    teacher_lr: float = 1e-3
    teacher_lr_drops: tuple[float, ...] = TEACHER_DROPS
    teacher_lr_gamma: float = 0.5
    teacher_per_seed: bool = True
    # students (all methods, same budget)
    student_model: str = "test_resnet"
    iterations: int = 1200
    evals: int = 20
    lr: float = 2e-3
    lr_drops: tuple[float, ...] = STUDENT_DROPS
    lr_gamma: float = 0.1
    #: self-distillation trains this many times the teacher's iterations on the students' schedule
    #: (the paper: 80 vs 40 epochs); None: the students' budget (the first study)
    self_scale: float | None = 2.0
    #: a student of seed s trains with seed s + this offset and distils the teacher of seed s, so its
    #: initialisation and batches are not its teacher's (0: the teacher's seed, as the first studies ran)
    student_seed_offset: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        """A recipe from study.json, including the first study's (``eval_every``, ``lr_drop_at``)."""
        data = dict(data)
        if "eval_every" in data or "lr_drop_at" in data:  # the first study's recipe
            data["evals"] = int(data["iterations"]) // int(data.pop("eval_every"))
            data["lr_drops"] = (float(data.pop("lr_drop_at")),)
            data["teacher_evals"] = int(data["teacher_iterations"]) // int(data.pop("teacher_eval_every"))
            data.setdefault("val_fraction", 0.2)
            data.setdefault("teacher_per_seed", False)
            data.setdefault("self_scale", None)
            data.setdefault("teacher_lr_drops", TEACHER_DROPS)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown recipe field(s) {unknown}")
        for name in ("lr_drops", "teacher_lr_drops"):
            if name in data:
                data[name] = tuple(float(x) for x in data[name])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as study.json holds it (lists for the drops)."""
        d = asdict(self)
        for name in ("lr_drops", "teacher_lr_drops"):
            d[name] = list(d[name])
        return d

    def validate(self) -> None:
        """Refuse a recipe the runs cannot follow (SystemExit with the option to change)."""
        for name in ("iterations", "evals", "teacher_iterations", "teacher_evals", "batch_size"):
            if getattr(self, name) < 1:
                raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
        for its, evals, what in ((self.iterations, self.evals, "students"),
                                 (self.teacher_iterations, self.teacher_evals, "teacher")):
            if its % evals:
                raise SystemExit(f"the {what}' {its} iterations must be a multiple of their {evals} evaluations")
        if self.self_scale is not None:
            its = self.self_iterations
            if its % self.evals:
                raise SystemExit(f"self-distillation's {its} iterations must be a multiple of {self.evals} evaluations")
        for name in ("lr_drops", "teacher_lr_drops"):
            if any(not 0 < f < 1 for f in getattr(self, name)):
                raise SystemExit(f"--{name.replace('_', '-')}: fractions of the budget, each in (0, 1)")
        if self.student_seed_offset < 0:
            raise SystemExit("the students' seed offset must be at least 0")
        if not 0 < self.val_fraction < 1:
            raise SystemExit("--val-fraction must be in (0, 1): epochs are selected on the validation split")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise SystemExit(f"unknown precision {self.precision!r}")

    @property
    def self_iterations(self) -> int:
        """Self-distillation's budget: ``self_scale`` x the teacher's, or the students' when it is None."""
        if self.self_scale is None:
            return self.iterations
        return int(round(self.self_scale * self.teacher_iterations))

    def student_schedule(self, iterations: int | None = None) -> dict[str, Any]:
        """The students' TrainConfig schedule, at ``iterations`` (default: the students' budget)."""
        return schedule(iterations or self.iterations, self.evals, self.lr, self.lr_drops, self.lr_gamma)

    def teacher_schedule(self) -> dict[str, Any]:
        """The teacher's TrainConfig schedule."""
        return schedule(self.teacher_iterations, self.teacher_evals, self.teacher_lr, self.teacher_lr_drops,
                        self.teacher_lr_gamma)


def milestones(epochs: int, drops: Iterable[float]) -> tuple[int, ...]:
    """Epochs after which the learning rate drops: each fraction of ``epochs``, rounded, within the run."""
    ms = sorted({min(max(1, round(f * epochs)), epochs) for f in drops})
    return tuple(m for m in ms if m < epochs)


def schedule(iterations: int, evals: int, lr: float, drops: Sequence[float], gamma: float) -> dict[str, Any]:
    """TrainConfig settings: ``evals`` epochs of ``iterations / evals`` steps, evaluated after each."""
    return dict(epochs=evals, iterations_per_epoch=iterations // evals, lr=lr,
                lr_milestones=milestones(evals, drops), lr_gamma=gamma, eval_every=1)


def round_up(n: float, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (at least one multiple)."""
    return int(max(multiple, math.ceil(n / multiple) * multiple))


#: the recipe of ``--quick``: tiny models and budgets, a test of the pipeline
QUICK = dict(
    teacher_model="test_resnet", teacher_dim=32, teacher_iterations=6, teacher_evals=2,
    student_model="test_resnet", iterations=4, evals=2, batch_size=16, m_per_class=4,
)
