"""A pytorch-metric-learning trainer that distils a frozen teacher into the trunk/embedder.

:class:`DistillationTrainer` is PML's ``MetricLossOnly`` with one more model, ``"teacher"``,
and one more loss, ``"distillation_loss"``::

    trainer = DistillationTrainer(
        models={"trunk": student_trunk, "embedder": student_head, "teacher": teacher},
        optimizers={"trunk_optimizer": ..., "embedder_optimizer": ...},
        batch_size=128,
        loss_funcs={"distillation_loss": RKDLoss()},        # + optional "metric_loss"
        mining_funcs={"tuple_miner": miner},                 # optional, for metric_loss
        dataset=train_set,
        sampler=MPerClassSampler(train_set.labels, m=5, batch_size=128, length_before_new_iter=12800),
        dataloader_num_workers=0,
        end_of_epoch_hook=hooks.end_of_epoch_hook(tester, ...),   # PML hooks work as usual
    )
    trainer.train(num_epochs=80)

Each iteration runs the student once and the teacher once (in inference mode, eval mode,
never trained: it is in ``freeze_these``) on the same batch, and calls
``loss_funcs["distillation_loss"](student_emb, labels, indices_tuple, ref_emb=teacher_emb)``.
The teacher gets the batch as the trunk does: give both the same, unnormalised input if
each normalises itself (as ``rkd_pml.models.EmbeddingModel`` does).
"""

from __future__ import annotations

import torch

from .._pml import trainer_parts

MetricLossOnly, c_f, KeyChecker = trainer_parts()


class DistillationTrainer(MetricLossOnly):
    """``MetricLossOnly`` plus a frozen ``models["teacher"]`` and a ``"distillation_loss"``.

    Extra keyword argument:
        mine_for_distillation: pass the miner's ``indices_tuple`` to the distillation loss
            too (default False: RKD relates every pair/triplet of the batch, the paper's
            setting; the miner only feeds ``metric_loss``).
    """

    def __init__(self, *args, mine_for_distillation: bool = False, **kwargs):
        self.mine_for_distillation = mine_for_distillation
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------ setup
    def custom_setup(self):
        # The teacher is never trained: PML's freeze mechanism keeps it in eval mode with
        # requires_grad False whenever the trainer switches to training.
        if "teacher" not in self.freeze_these:
            self.freeze_these = (*tuple(self.freeze_these), "teacher")
        teacher = self.models.get("teacher")
        if teacher is not None:
            teacher.eval()
            c_f.set_requires_grad(teacher, requires_grad=False)
        if self.loss_weights is None:
            # MetricLossOnly only knows "metric_loss"; weigh every given loss 1 by default
            self.loss_weights = {k: 1 for k in self.loss_funcs}

    def modify_schema(self):
        self.schema["models"] = KeyChecker(
            ["trunk", "embedder", "teacher"], essential=["trunk", "teacher"], important=[]
        )
        self.schema["loss_funcs"] = KeyChecker(
            ["metric_loss", "distillation_loss"], essential=["distillation_loss"], important=[]
        )
        student_models = [k for k in self.models if k != "teacher"]
        self.schema["optimizers"] = KeyChecker(
            lambda s, d: c_f.append_map([k for k in d["models"].keys if k != "teacher"] + d["loss_funcs"].keys, "_optimizer"),
            important=c_f.append_map(student_models, "_optimizer"),
        )

    # ------------------------------------------------------------------ one step
    def compute_teacher_embeddings(self, data):
        """The teacher's embeddings of the batch, without a graph (inference mode)."""
        data = c_f.to_device(data, device=self.data_device, dtype=self.dtype)
        with torch.inference_mode():
            emb = self.models["teacher"](data)
        return emb.clone()  # an ordinary tensor: losses may save it for backward

    def calculate_loss(self, curr_batch):
        data, labels = curr_batch
        embeddings = self.compute_embeddings(data)
        teacher_embeddings = self.compute_teacher_embeddings(data)
        indices_tuple = self.maybe_mine_embeddings(embeddings, labels)
        self.losses["metric_loss"] = self.maybe_get_metric_loss(embeddings, labels, indices_tuple)
        self.losses["distillation_loss"] = self.maybe_get_distillation_loss(
            embeddings, labels, indices_tuple if self.mine_for_distillation else None, teacher_embeddings
        )

    def maybe_get_metric_loss(self, embeddings, labels, indices_tuple):
        if "metric_loss" in self.loss_funcs and self.loss_weights.get("metric_loss", 0) > 0:
            return self.loss_funcs["metric_loss"](embeddings, labels, indices_tuple)
        return 0

    def maybe_get_distillation_loss(self, embeddings, labels, indices_tuple, teacher_embeddings):
        if self.loss_weights.get("distillation_loss", 0) > 0:
            return self.loss_funcs["distillation_loss"](embeddings, labels, indices_tuple, ref_emb=teacher_embeddings)
        return 0
