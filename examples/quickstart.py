"""Quickstart: distil a timm teacher into a smaller timm student with RKD, the PML way.

Digits 0-4 (sklearn's bundled 8x8 digits, upsampled to 32 px) train; digits 5-9, never seen
in training, measure retrieval. Runs on a CPU in well under a minute.
"""

import timm
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from sklearn.datasets import load_digits

from rkd_pml import RKDLoss

torch.manual_seed(0)
digits = load_digits()
images = F.interpolate(torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16, size=32)
labels = torch.tensor(digits.target)
train, test = labels < 5, labels >= 5


class Embedder(torch.nn.Module):
    """A timm backbone (pooled features) and a linear embedding head, optionally L2-normalised."""

    def __init__(self, name: str, dim: int, l2: bool):
        super().__init__()
        self.backbone = timm.create_model(name, pretrained=False, num_classes=0, in_chans=1)
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.head, self.l2 = torch.nn.Linear(width, dim), l2

    def forward(self, x):
        emb = self.head(self.backbone(x))
        return F.normalize(emb, dim=1) if self.l2 else emb


def fit(model, loss_fn, steps, teacher=None, miner=None):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_train, y_train = images[train], labels[train]
    for step in range(steps):
        idx = torch.randint(len(y_train), (48,))
        x, y = x_train[idx], y_train[idx]
        emb = model(x)
        indices = miner(emb, y) if miner else None
        ref = teacher(x) if teacher else None
        loss = loss_fn(emb, y, indices, ref_emb=ref)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def recall_at_1(model) -> float:
    emb, y = model(images[test]), labels[test]
    calc = AccuracyCalculator(include=("precision_at_1",), knn_func=CustomKNN(distances.LpDistance(normalize_embeddings=False)))
    return calc.get_accuracy(emb, y, ref_includes_query=True)["precision_at_1"]


# 1. Teacher: triplet loss on mined triplets, L2-normalised 128-d embedding.
miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
teacher = fit(Embedder("resnet10t", 128, l2=True), losses.TripletMarginLoss(margin=0.2), 80, miner=miner)
for p in teacher.parameters():
    p.requires_grad_(False)

# 2. Student: a 32-d embedding without L2, distilled with RKD-DA (weights 1 and 2).
student = fit(Embedder("resnet10t", 32, l2=False), RKDLoss(distance_weight=1.0, angle_weight=2.0), 80, teacher=teacher)

# 3. Retrieval on the unseen digits (Recall@1 = PML's precision_at_1).
print(f"teacher Recall@1 on unseen digits: {recall_at_1(teacher):.3f}")
print(f"student Recall@1 on unseen digits: {recall_at_1(student):.3f}")
