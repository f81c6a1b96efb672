"""evaluate / embed on a model and a data set; agreement with PML's GlobalEmbeddingSpaceTester."""

import pytest
import torch
from torch.utils.data import Subset

from rkd_pml.data import load_dataset
from rkd_pml.evaluation import embed, evaluate
from rkd_pml.models import EmbeddingModel




@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    _, test = load_dataset("digits", image_size=32)
    subset = Subset(test, list(range(0, len(test), 10)))  # 90 images, 5 classes
    model = EmbeddingModel("resnet10t", embedding_dim=16).train()
    return model, subset


def brute_recall(embeddings, labels, k):
    d = torch.cdist(embeddings.double(), embeddings.double())
    d.fill_diagonal_(float("inf"))
    nearest = d.topk(k, dim=1, largest=False).indices
    return (labels[nearest] == labels[:, None]).any(dim=1).double().mean().item()


def test_embed_shapes_and_mode_restored(setup):
    model, subset = setup
    embeddings, labels = embed(model, subset, batch_size=64, progress=False)
    assert embeddings.shape == (90, 16) and embeddings.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert torch.equal(labels, torch.as_tensor(subset.dataset.labels[subset.indices]))
    assert model.training  # restored after embedding in eval mode
    again, _ = embed(model, subset, batch_size=32, progress=False)
    assert torch.allclose(embeddings, again, atol=1e-5)  # eval mode: batch size does not matter


def test_evaluate_matches_brute_force(setup):
    model, subset = setup
    metrics = evaluate(model, subset, ks=(1, 2, 4, 8), batch_size=50, progress=False)
    embeddings, labels = embed(model, subset, progress=False)
    assert set(metrics) == {
        "recall@1",
        "recall@2",
        "recall@4",
        "recall@8",
        "precision_at_1",
        "r_precision",
        "mean_average_precision_at_r",
    }
    for k in (1, 2, 4, 8):
        assert metrics[f"recall@{k}"] == pytest.approx(brute_recall(embeddings, labels, k), abs=1e-9)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in metrics.values())
    assert metrics["recall@1"] < metrics["recall@8"]


def test_pml_tester_gives_the_same_figures(setup):
    # PML 2's tester with its own calculator and Euclidean kNN on the raw embeddings
    # (normalize_embeddings=False, as evaluate does): precision_at_1 is Recall@1
    testers = pytest.importorskip("pytorch_metric_learning.testers")
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    model, subset = setup
    ours = evaluate(model, subset, ks=(1,), progress=False)
    tester = testers.GlobalEmbeddingSpaceTester(
        normalize_embeddings=False,
        batch_size=64,
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        accuracy_calculator=AccuracyCalculator(
            include=("precision_at_1", "mean_average_precision_at_r"),
            k="max_bin_count",
            knn_func=CustomKNN(LpDistance(normalize_embeddings=False)),
        ),
    )
    theirs = tester.test({"test": subset}, 0, model)["test"]
    assert theirs["precision_at_1_level0"] == pytest.approx(ours["recall@1"], abs=1e-6)
    assert theirs["mean_average_precision_at_r_level0"] == pytest.approx(
        ours["mean_average_precision_at_r"], abs=1e-6
    )


def test_sop_ks_beyond_the_set_size(setup):
    model, subset = setup
    metrics = evaluate(model, Subset(subset, range(40)), ks=(1, 10, 100, 1000), metrics=(), progress=False)
    assert list(metrics) == ["recall@1", "recall@10", "recall@100", "recall@1000"]
    assert metrics["recall@100"] == metrics["recall@1000"] == 1.0
