"""Training images none of which decodes: refused before anything is written, and an epoch that
trained on nothing fails and saves no checkpoint (issue 17)."""
from dataclasses import replace

import pytest

import main
from cli_check import Files, assert_one_line_error, run_main
from train_support import FAST_ARGS, tiny_config
from training import data as training_data
from training.config import TrainConfig
from training.engine import NoTrainingStepError, train


@pytest.fixture
def undecodable(tmp_path):
    """<root>/train/<class>/ for ten classes of files that are no images."""
    for c in range(10):
        folder = tmp_path / "data" / "train" / str(c)
        folder.mkdir(parents=True)
        for i in range(4):
            (folder / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot the rest of a PNG")
    return tmp_path / "data"


def test_a_folder_of_undecodable_images_is_refused_before_anything_is_written(undecodable, tiny_dir, tmp_path,
                                                                                capfd):
    config = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **FAST_ARGS)
    files = Files(tmp_path)
    result = run_main(main.main, ["--config", config, "--data_path", undecodable, "--output_dir", tmp_path / "out"],
                      capfd)
    assert_one_line_error(result, "main.py", f"{undecodable / 'train'}: none of 16 images tried across its 40 can be "
                                             f"decoded", "cannot read the image")
    files.assert_unchanged()


def test_an_epoch_that_trained_on_nothing_fails_and_saves_nothing(undecodable, tiny_dir, tmp_path, monkeypatch):
    config = TrainConfig.load(tiny_config(tmp_path / "tiny.yaml", tiny_dir, **FAST_ARGS), data_path=str(undecodable),
                              output_dir=str(tmp_path / "out"))
    # a folder whose sampled images decode but none of the rest: past the up-front check
    monkeypatch.setattr(training_data.TenCropImageFolder, "check_decodable", lambda self: None)
    with pytest.raises(NoTrainingStepError, match=r"epoch 0 trained on nothing: every image failed to decode "
                                                  r"\(e\.g\. .*\.png\); no checkpoint was written"):
        train(replace(config, epochs=2))
    assert not list((tmp_path / "out").glob("checkpoint-*.pth"))
