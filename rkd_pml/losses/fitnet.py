"""FitNet (Romero et al., ICLR 2015) on the final embedding, as a PML loss: a distillation baseline.

The student's embedding is mapped to the teacher's width by a learned linear map (no bias,
weights initialised uniformly in ``[-0.005, 0.005]``) and regressed onto the teacher's
embedding with the squared error, as in the RKD paper's comparison.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import DistillationLoss
from .inputs import check_count
from .registry import register_distillation_loss

#: Half-width of the uniform initialisation of the regressor's weights.
INIT_RANGE = 0.005


class FitNetEmbeddingLoss(DistillationLoss):
    """FitNet regression of the student's embedding onto the teacher's, one loss per example.

    Call it as ``loss(student_emb, ref_emb=teacher_emb)``:

    * ``embeddings``: the student's ``(N, student_dim)`` embeddings.
    * ``ref_emb``: the teacher's ``(N, teacher_dim)`` embeddings of the same batch,
      row-aligned. Required; detached (the teacher gets no gradient).
    * ``labels``: accepted (checked for shape) and unused. ``ref_labels``: unused.
    * ``indices_tuple``: not supported (ValueError): the loss is a per-example regression
      and has no pairs or triplets.

    The loss of example ``i`` is ``mean_over_dims((W s_i - t_i) ** 2)``, with
    ``W = self.regressor.weight`` of shape ``(teacher_dim, student_dim)``. The ``N``
    per-example losses go to the reducer as ``"element"`` losses indexed by row; the default
    ``MeanReducer`` gives the mean squared error over all ``N * teacher_dim`` entries (the
    published formulation). Checks, teacher detach and the upcast of half-precision inputs
    are :class:`DistillationLoss`'s; the loss is computed in the dtype of ``embeddings``
    and ``W`` promoted to at least float32. It is not scale invariant: it stays finite as
    long as the squared errors fit that dtype (norms up to about 1e18 in float32).

    The map ``self.regressor`` (``nn.Linear(student_dim, teacher_dim, bias=False)``) is a
    trainable part of this loss: its parameters are in ``loss.parameters()`` and **must be
    given to an optimizer** together with the student's, e.g.
    ``torch.optim.Adam([*student.parameters(), *loss.parameters()])``; otherwise the map
    stays at its tiny random initialisation. Move the loss to the embeddings' device
    (``loss.to(device)``) and save it with the student (``loss.state_dict()``).

    No distance is involved, so a ``distance`` argument is refused; nothing is
    L2-normalised.

    Args:
        student_dim: width ``Ds`` of the student's embeddings, an integer >= 1.
        teacher_dim: width ``Dt`` of the teacher's embeddings, an integer >= 1.
        **kwargs: passed to ``BaseMetricLossFunction`` (``reducer``,
            ``embedding_regularizer``, ...).
    """

    indices_tuple_refusal = "it is a per-example regression onto the teacher, with no pairs or triplets."
    uses_distance = False

    def __init__(self, student_dim: int, teacher_dim: int, **kwargs):
        self.student_dim = check_count("student_dim", student_dim)
        self.teacher_dim = check_count("teacher_dim", teacher_dim)
        super().__init__(**kwargs)
        self.regressor = nn.Linear(self.student_dim, self.teacher_dim, bias=False)
        with torch.no_grad():
            self.regressor.weight.uniform_(-INIT_RANGE, INIT_RANGE)
        self.add_to_recordable_attributes(
            list_of_names=["student_dim", "teacher_dim"], is_stat=False
        )

    def check_inputs(self, embeddings: Tensor, ref_emb: Tensor) -> None:
        """Widths ``(N, student_dim)`` and ``(N, teacher_dim)``; the regressor on their device."""
        widths = (
            ("student embeddings", embeddings, "student_dim"),
            ("teacher embeddings (ref_emb)", ref_emb, "teacher_dim"),
        )
        for role, x, attr in widths:
            if x.shape[1] != getattr(self, attr):
                raise ValueError(
                    f"{role} have width {x.shape[1]}, but this FitNetEmbeddingLoss was built "
                    f"for {attr}={getattr(self, attr)}"
                )
        weight = self.regressor.weight
        if weight.device != embeddings.device:
            raise ValueError(
                f"the loss's regressor is on {weight.device} but the embeddings are on "
                f"{embeddings.device}: move the loss with loss.to(device)"
            )

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        weight = self.regressor.weight
        dtype = torch.promote_types(embeddings.dtype, weight.dtype)
        mapped = F.linear(embeddings.to(dtype), weight.to(dtype))  # (N, Dt)
        return self.per_example((mapped - ref_emb.to(dtype)).pow(2).mean(dim=1))  # (N,)


register_distillation_loss("fitnet", lambda o, s, t: FitNetEmbeddingLoss(s, t), "FitNet: learned linear map to the teacher's width + MSE")


__all__ = ["FitNetEmbeddingLoss", "INIT_RANGE"]
