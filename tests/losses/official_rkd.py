"""A plain transcription of the official RKD formulation, used only as a test reference.

Written from the published description: Gram-based distances clamped at 1e-12, diagonal 0,
normalised by the mean of the positive entries, smooth L1 mean over all N^2 entries; angles
from L2-normalised difference vectors (vertex = first index), smooth L1 mean over N^3.
"""

import torch
from torch.nn import functional as F


def pdist(e: torch.Tensor) -> torch.Tensor:
    sq = e.pow(2).sum(dim=1)
    res = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=1e-12).sqrt().clone()
    res[range(len(e)), range(len(e))] = 0
    return res


def official_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        t_d = pdist(teacher)
        t_d = t_d / t_d[t_d > 0].mean()
    d = pdist(student)
    d = d / d[d > 0].mean()
    return F.smooth_l1_loss(d, t_d, reduction="mean")


def official_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        td = F.normalize(teacher.unsqueeze(0) - teacher.unsqueeze(1), p=2, dim=2)
        t_angle = torch.bmm(td, td.transpose(1, 2)).view(-1)
    sd = F.normalize(student.unsqueeze(0) - student.unsqueeze(1), p=2, dim=2)
    s_angle = torch.bmm(sd, sd.transpose(1, 2)).view(-1)
    return F.smooth_l1_loss(s_angle, t_angle, reduction="mean")
