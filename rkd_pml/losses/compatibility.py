"""A coordinate term that keeps a student's embeddings in its teacher's embedding space.

Relational losses (RKD and its neighbours) match the teacher's distances and angles, not its
coordinates: a relational student's query cannot search a gallery indexed with the teacher's
embeddings. This term regresses each student embedding onto the teacher's embedding of the same
image, with no map in between, so the student's outputs are vectors of the teacher's space and
its queries search the teacher's index directly (asymmetric retrieval).
"""

from __future__ import annotations

from torch import Tensor

from .base import DistillationLoss


class EmbeddingCompatibilityLoss(DistillationLoss):
    """Mean squared Euclidean distance between student and teacher embeddings of the same images.

    Call it as ``loss(student_emb, labels, None, ref_emb=teacher_emb)``:

    * ``embeddings``: the student's ``(N, D)`` embeddings, as the student outputs them (its
      queries);
    * ``ref_emb``: the teacher's ``(N, D)`` embeddings of the same batch, row-aligned, as the
      teacher outputs them (what its gallery stores: L2-normalised when the teacher normalises).
      Detached: the teacher gets no gradient.

    The loss of example ``i`` is ``||s_i - t_i||^2`` (the sum over the ``D`` coordinates); the
    default ``MeanReducer`` averages it over the ``N`` examples. Nothing is normalised here:
    retrieval compares the two models' outputs as they are. Both widths must be equal (there is
    no map); ``indices_tuple`` is refused. Checks, teacher detach and half-precision upcast are
    :class:`DistillationLoss`'s.
    """

    indices_tuple_refusal = "it is a per-example regression onto the teacher, with no pairs or triplets."
    uses_distance = False

    def check_inputs(self, embeddings: Tensor, ref_emb: Tensor) -> None:
        """Student and teacher embeddings of the same width."""
        if embeddings.shape[1] != ref_emb.shape[1]:
            raise ValueError(
                f"student embeddings have width {embeddings.shape[1]} and teacher embeddings (ref_emb) "
                f"{ref_emb.shape[1]}: the compatibility term needs the same width"
            )

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        return self.per_example((embeddings - ref_emb.to(embeddings.dtype)).pow(2).sum(dim=1))  # (N,)


__all__ = ["EmbeddingCompatibilityLoss"]
