"""A saved model records its data settings whole (DataSettings.record), and a model saved
before they were one value (fewer keys) is still read: evaluated on the same data, the same way."""

import json
import shutil
from pathlib import Path

from rkd_pml.data import DataSettings, resolve_data_settings
from rkd_pml.training import evaluate_saved


def _model_config(run: str) -> dict:
    return json.loads((Path(run) / "model" / "config.json").read_text())


def test_the_saved_model_records_every_data_setting(teacher_dir):
    config = _model_config(teacher_dir)
    record = config["training_data"]
    assert set(DataSettings("digits", 16).record()) <= set(record)
    assert (record["dataset"], record["image_size"], record["in_chans"]) == ("digits", 16, 3)
    # the interpolation and crop the transforms used are the model's own preprocessing
    assert (record["interpolation"], record["crop_pct"]) == (config["data_config"]["interpolation"],
                                                             config["data_config"]["crop_pct"])
    assert resolve_data_settings({}, record, model_config=record).record() == {
        k: record[k] for k in DataSettings("digits", 16).record()}


def test_a_model_saved_with_the_old_record_is_evaluated_the_same(teacher_dir, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(Path(teacher_dir) / "model", old)
    config = json.loads((old / "config.json").read_text())
    keep = ("dataset", "root", "test_root", "image_size", "in_chans", "test_transform", "train_transform",
            "precision", "recall_ks")
    config["training_data"] = {k: config["training_data"][k] for k in keep}
    (old / "config.json").write_text(json.dumps(config))
    now = evaluate_saved(teacher_dir, progress=False, device="cpu")
    then = evaluate_saved(old, progress=False, device="cpu")
    assert "digits test: 896 images of 5 classes at 16 px, 3 channels, paper test transform" in capsys.readouterr().out
    assert then == now


def test_the_run_records_its_data_settings_and_old_configs_still_read(teacher_dir):
    from rkd_pml.training.config import config_from_dict

    config = json.loads((Path(teacher_dir) / "config.json").read_text())
    model_record = _model_config(teacher_dir)["training_data"]
    assert config["data_settings"] == {k: model_record[k] for k in config["data_settings"]}
    assert config["data_settings"]["image_size"] == config["image_size"] == 16
    old = {k: v for k, v in config.items() if k != "data_settings"}  # a run of an earlier version
    assert config_from_dict(old, "old config.json") == config_from_dict(config, "config.json")
