"""Everything distributed in one place: PML's wrappers made safe for RKD (:mod:`.wrappers`),
the torchrun session of the training jobs (:mod:`.session`) and the global-batch objective
(:mod:`.objective`)."""

from .wrappers import (
    EFFICIENT_REFUSAL,
    RKDDistributedLossWrapper,
    RKDDistributedMinerWrapper,
    check_equal_batch_sizes,
    distributed_rkd,
)

__all__ = [
    "EFFICIENT_REFUSAL",
    "RKDDistributedLossWrapper",
    "RKDDistributedMinerWrapper",
    "check_equal_batch_sizes",
    "distributed_rkd",
]
