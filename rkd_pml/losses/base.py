"""The base of the distillation losses: what a student-teacher PML loss shares.

A distillation loss is called as ``loss(student_emb, labels=None, indices_tuple=None,
ref_emb=teacher_emb)``: ``embeddings`` are the student's ``(N, Ds)`` embeddings,
``ref_emb`` the teacher's ``(N, Dt)`` embeddings of the same batch, row-aligned.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._pml import BaseMetricLossFunction, LpDistance
from .inputs import check_callable_or_none, check_distillation_call, check_euclidean, check_real

#: Keyword arguments that PML's ``BaseMetricLossFunction`` takes.
PML_KWARGS = ("reducer", "distance", "embedding_regularizer", "embedding_reg_weight", "collect_stats")


def result_dtype(embeddings: Tensor) -> torch.dtype:
    """The dtype of the loss: the embeddings' dtype promoted to at least float32."""
    return torch.promote_types(embeddings.dtype, torch.float32)


class DistillationLoss(BaseMetricLossFunction):
    """PML loss between a student's ``embeddings`` ``(N, Ds)`` and a teacher's ``ref_emb``
    ``(N, Dt)``; subclasses implement ``compute_loss`` (PML's signature).

    What every distillation loss does here, before ``compute_loss``:

    * checks the call (:func:`~rkd_pml.losses.inputs.check_distillation_call`): finite
      floating 2-D student and teacher with one row each per example, on one device;
      labels ``(N,)`` (accepted by every loss, used only to convert mined tuples); an
      ``indices_tuple`` of integer index tensors, or a ValueError saying why the loss takes
      none (:attr:`indices_tuple_refusal`); then :meth:`check_inputs` for the loss's own needs;
    * detaches the teacher: it never receives a gradient;
    * the dtype rule: half-precision embeddings (float16, bfloat16, AMP outputs) are upcast
      to float32 at this boundary, so all arithmetic runs in float32 or better, and autograd
      returns the student's gradient in its own dtype; the loss has the dtype
      :func:`result_dtype` (``promote(embeddings.dtype, float32)``).

    Constructor checks: PML's ``reducer`` and ``embedding_regularizer`` must be callable,
    ``embedding_reg_weight`` a finite number ``>= 0``, unknown keyword arguments are refused
    by name. Losses with :attr:`uses_distance` take PML's ``LpDistance(p=2, power=1)`` only
    (default: not normalised); the others refuse a ``distance``.
    """

    #: Why the loss refuses an ``indices_tuple`` (a sentence), or ``None`` if it takes one.
    indices_tuple_refusal: str | None = None
    #: Whether the loss compares Euclidean distances (and so takes a ``distance``).
    uses_distance: bool = True

    def __init__(self, **kwargs):
        name = type(self).__name__
        unknown = sorted(set(kwargs) - set(PML_KWARGS))
        if unknown:
            raise TypeError(
                f"{name} got unexpected keyword argument(s) {unknown}; besides its own "
                f"arguments it takes PML's {list(PML_KWARGS)}"
            )
        check_callable_or_none("reducer", kwargs.get("reducer"), "MeanReducer()")
        check_callable_or_none("embedding_regularizer", kwargs.get("embedding_regularizer"), "LpRegularizer()")
        if "embedding_reg_weight" in kwargs:
            check_real("embedding_reg_weight", kwargs["embedding_reg_weight"])
        if not self.uses_distance and kwargs.get("distance") is not None:
            raise ValueError(f"{name} compares embeddings directly and uses no distance; do not pass distance=")
        super().__init__(**kwargs)
        if self.uses_distance:
            check_euclidean(self.distance, name)

    def get_default_distance(self) -> LpDistance:
        return LpDistance(p=2, power=1, normalize_embeddings=False)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: tuple[Tensor, ...] | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        """Scalar loss for student ``embeddings`` ``(N, Ds)`` and teacher ``ref_emb`` ``(N, Dt)``."""
        check_distillation_call(
            type(self).__name__, embeddings, labels, indices_tuple, ref_emb, self.indices_tuple_refusal
        )
        self.check_inputs(embeddings, ref_emb)
        embeddings = embeddings.to(result_dtype(embeddings))
        ref_emb = ref_emb.detach().to(result_dtype(ref_emb))
        return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def check_inputs(self, embeddings: Tensor, ref_emb: Tensor) -> None:
        """Checks of a particular loss, after the shared ones (none by default)."""

    def per_example(self, losses: Tensor) -> dict:
        """PML loss dict of ``(N,)`` per-example losses, reduced as ``"element"`` losses."""
        return {
            "loss": {
                "losses": losses,
                "indices": torch.arange(losses.shape[0], device=losses.device),
                "reduction_type": "element",
            }
        }


__all__ = ["DistillationLoss", "PML_KWARGS", "result_dtype"]
