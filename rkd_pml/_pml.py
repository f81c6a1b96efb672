"""The one boundary to pytorch-metric-learning (PML): every PML name the package uses.

No other module of ``rkd_pml`` imports ``pytorch_metric_learning``; a test enforces it. The
package is written against PML 2 (``>=2.5,<3``); PML 3 renames or removes several of these
names (see ``docs/PML3.md``), and the port is a change of this module alone.

What PML 3 removes altogether (trainers, testers, logging presets, ``datasets``) is not
imported here at module level: :func:`trainer_parts` imports PML's trainer machinery on
demand, for :class:`rkd_pml.training.DistillationTrainer` only, and says clearly when the
installed PML has none. The package's own CUB/Cars/SOP readers and Recall@K replace the rest.
"""

from __future__ import annotations

import contextlib
from importlib import metadata
from typing import Any, Iterator

import numpy as np
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import BaseMetricLossFunction, CrossBatchMemory, TripletMarginLoss
from pytorch_metric_learning.miners import BaseMiner, DistanceWeightedMiner
from pytorch_metric_learning.reducers import AvgNonZeroReducer, MeanReducer, MultipleReducers
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils import common_functions as _common
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.distributed import (
    DistributedLossWrapper,
    DistributedMinerWrapper,
    is_distributed,
)
from pytorch_metric_learning.utils.inference import CustomKNN
from pytorch_metric_learning.utils.loss_and_miner_utils import convert_to_pairs, convert_to_triplets

__all__ = [
    "AccuracyCalculator",
    "AvgNonZeroReducer",
    "BaseMetricLossFunction",
    "BaseMiner",
    "CrossBatchMemory",
    "CustomKNN",
    "DistanceWeightedMiner",
    "DistributedLossWrapper",
    "DistributedMinerWrapper",
    "LpDistance",
    "MPerClassSampler",
    "MeanReducer",
    "MultipleReducers",
    "TripletMarginLoss",
    "convert_to_pairs",
    "convert_to_triplets",
    "is_distributed",
    "numpy_random",
    "pml_version",
    "trainer_parts",
]


def pml_version() -> str:
    """The installed PML's version (PML 3 has no ``__version__``: read the distribution's)."""
    return metadata.version("pytorch-metric-learning")


@contextlib.contextmanager
def numpy_random(rng: np.random.RandomState) -> Iterator[None]:
    """Make PML's samplers and miners draw from ``rng`` instead of NumPy's global generator."""
    saved = _common.NUMPY_RANDOM
    _common.NUMPY_RANDOM = rng
    try:
        yield
    finally:
        _common.NUMPY_RANDOM = saved


def trainer_parts() -> tuple[Any, Any, Any]:
    """``(MetricLossOnly, common_functions, KeyChecker)`` of PML 2's trainer machinery.

    Raises ImportError naming the installed version when PML has no trainers (PML 3 removed
    them): the rest of the package works without them.
    """
    try:
        from pytorch_metric_learning.trainers import MetricLossOnly
        from pytorch_metric_learning.utils.key_checker import KeyChecker
    except ImportError as exc:
        raise ImportError(
            f"DistillationTrainer needs pytorch-metric-learning's trainers, which the installed "
            f"version ({pml_version()}) does not have (PML 3 removed them); install "
            "'pytorch-metric-learning>=2.5,<3', or train with rkd_pml.training.distill / "
            "`rkd-pml distill`, which do not need them"
        ) from exc
    return MetricLossOnly, _common, KeyChecker
