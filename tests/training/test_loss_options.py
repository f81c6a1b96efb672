"""A loss declares its options beside its class: they become distill's flags and config keys,
reach the loss, are recorded in config.json, and runs recorded before (every loss's options at
the top level of config.json) still load and resume."""

import json
from dataclasses import dataclass

import pytest
import torch

from rkd_pml._pml import BaseMetricLossFunction
from rkd_pml.cli import main
from rkd_pml.losses import registry
from rkd_pml.settings import setting
from rkd_pml.training.config import DistillConfig, config_from_dict

RUN = ["--student", "resnet10t", "--embedding-dim", "4", "--image-size", "16", "--epochs", "1", "--iters", "2",
       "--batch-size", "20", "--m-per-class", "5", "--no-progress", "--threads", "1"]


class ScaledNormLoss(BaseMetricLossFunction):
    """A toy distillation loss: ``scale * (mean ||s|| - mean ||t||)^2``."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        gap = embeddings.norm(dim=1).mean() - ref_emb.detach().norm(dim=1).mean()
        return {"loss": {"losses": self.scale * gap**2, "indices": None, "reduction_type": "already_reduced"}}


@dataclass
class ScaledNormOptions:
    toy_scale: float = setting(1.0, "the toy loss's scale", metavar="S", above=0.0, high=100.0)


@pytest.fixture
def toy_loss():
    built = []

    def factory(options, s, t):
        built.append(options.toy_scale)
        return ScaledNormLoss(options.toy_scale)

    registry.register_distillation_loss("scaled-norm", factory, "toy", ScaledNormOptions)
    yield built
    del registry.DISTILLATION_LOSSES["scaled-norm"]


def test_a_loss_with_one_option_gets_a_flag_and_its_value(teacher_dir, tmp_path, capsys, toy_loss):
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--toy-scale S the toy loss's scale (--loss scaled-norm) (default: 1.0)" in help_text
    out = tmp_path / "s"
    assert main(["distill", "--teacher", teacher_dir, "--loss", "scaled-norm", "--toy-scale", "2.5", "--out", str(out),
                 *RUN]) == 0
    assert toy_loss == [2.5]
    assert json.loads((out / "config.json").read_text())["loss_options"] == {"toy_scale": 2.5}


def test_an_option_out_of_bounds_or_of_another_loss_is_one_line_naming_the_flag(teacher_dir, tmp_path, capsys, toy_loss):
    for argv, expected in ((["--loss", "scaled-norm", "--toy-scale", "0"], "argument --toy-scale: must be a number > 0.0"),
                           (["--toy-scale", "2"], "--toy-scale (an option of scaled-norm) does not apply to the loss 'rkd'")):
        with pytest.raises(SystemExit) as stop:
            main(["distill", "--teacher", teacher_dir, "--out", str(tmp_path / "s"), *argv, *RUN])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_config_files_take_options_as_keys_or_in_loss_options():
    as_key = DistillConfig.from_dict({"loss": "darkrank", "darkrank_alpha": 2.0})
    nested = DistillConfig.from_dict({"loss": "darkrank", "loss_options": {"darkrank_alpha": 2.0}})
    assert as_key == nested and as_key.loss_options == {"darkrank_alpha": 2.0}
    assert as_key.to_dict()["loss_options"] == {"darkrank_alpha": 2.0, "darkrank_beta": 3.0, "darkrank_list_length": 4}
    with pytest.raises(ValueError, match="darkrank_alpha is given twice"):
        DistillConfig.from_dict({"loss": "darkrank", "darkrank_alpha": 2.0, "loss_options": {"darkrank_alpha": 1.0}})
    with pytest.raises(ValueError, match="darkrank_beta must be a number > 0"):
        DistillConfig.from_dict({"teacher": "t", "loss": "darkrank", "darkrank_beta": -1}).validate()


def _old_layout(config: dict, **options) -> dict:
    """config.json as written before the losses declared their options: every loss's options at
    the top, and none of the settings added since (``compat_weight``)."""
    old = {k: v for k, v in config.items() if k not in ("loss_options", "compat_weight")}
    old.update(dict(distance_weight=1.0, angle_weight=2.0, darkrank_alpha=3.0, darkrank_beta=3.0, darkrank_list_length=4))
    old.update(options)
    return old


def test_an_old_config_json_loads_with_its_losss_options(teacher_dir, tmp_path):
    saved = DistillConfig(teacher=teacher_dir, loss="darkrank").to_dict()
    cfg = config_from_dict(_old_layout(saved, darkrank_alpha=5.0, angle_weight=7.0))
    assert cfg.loss_options == {"darkrank_alpha": 5.0, "darkrank_beta": 3.0, "darkrank_list_length": 4}
    with pytest.raises(ValueError, match="lacks the setting 'darkrank_beta'"):
        config_from_dict({**saved, "loss_options": {"darkrank_alpha": 5.0, "darkrank_list_length": 4}})


def test_an_old_run_resumes(teacher_dir, tmp_path):
    out = tmp_path / "s"
    assert main(["distill", "--teacher", teacher_dir, "--out", str(out), *RUN]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["loss_options"] == {"distance_weight": 1.0, "angle_weight": 2.0}
    (out / "config.json").write_text(json.dumps(_old_layout(config)))
    assert main(["distill", "--out", str(out), "--resume", "--epochs", "2", "--no-progress", "--threads", "1"]) == 0
    resumed = json.loads((out / "config.json").read_text())
    assert resumed["epochs"] == 2 and resumed["loss_options"] == {"distance_weight": 1.0, "angle_weight": 2.0}
    assert "darkrank_alpha" not in resumed
    assert resumed["compat_weight"] == 0.0  # absent from the old config: the setting's "absent" value
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    # an option that differs from the run's is refused, as any setting that is not a runtime one
    with pytest.raises(SystemExit):
        main(["distill", "--out", str(out), "--resume", "--epochs", "3", "--angle-weight", "1", "--no-progress"])


def test_options_reach_rkd_through_the_objective():
    from rkd_pml.training.objective import build_objective

    terms = build_objective(DistillConfig(teacher="t", loss="rkd-a", loss_options={"angle_weight": 0.25}), 4, 8).distill_terms
    s, t = torch.randn(12, 4, dtype=torch.float64), torch.randn(12, 8, dtype=torch.float64)
    from rkd_pml import RKDAngleLoss

    assert torch.allclose(sum(term(s, ref_emb=t) for term in terms.values()), 0.25 * RKDAngleLoss()(s, ref_emb=t))
