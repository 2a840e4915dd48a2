"""main_sample.py refuses in one line, writing nothing, what would give NaN samples: probabilities that
overflow float32 and a checkpoint holding non-finite weights (issue 17)."""
import shutil

import torch

import main_sample
from cli_check import Files, assert_one_line_error, run_main


def test_sampling_into_non_finite_probabilities_is_one_line(tiny_dir, tmp_path, capfd):
    (tmp_path / "mine.txt").write_text("the user's\n")
    files = Files(tmp_path)
    result = run_main(main_sample.main, ["--checkpoint", tiny_dir, "--output_dir", tmp_path / "out", "--device", "cpu",
                                         "--num_samples", 2, "--cfg", "3e38", "--temperature", "0.01"], capfd)
    assert_one_line_error(result, "main_sample.py", "temperature 0.01 makes logits / temperature overflow float32",
                          earlier_lines=True)
    files.assert_unchanged(new_files=True)
    assert not (tmp_path / "out" / "samples.npz").exists()


def test_a_checkpoint_holding_nan_weights_is_refused_at_load(tiny_dir, tmp_path, capfd):
    model = shutil.copytree(tiny_dir, tmp_path / "model")
    checkpoint = torch.load(model / "checkpoint-last.pth", weights_only=False)
    name = next(k for k, v in checkpoint["model"].items() if v.is_floating_point() and v.ndim == 2)
    checkpoint["model"][name][0, 0] = float("nan")
    torch.save(checkpoint, model / "checkpoint-last.pth")
    files = Files(tmp_path)
    result = run_main(main_sample.main, ["--checkpoint", model, "--output_dir", tmp_path / "out", "--device", "cpu",
                                         "--num_samples", 2], capfd)
    assert_one_line_error(result, "main_sample.py", f"{model / 'checkpoint-last.pth'}: tensor '{name}' holds "
                                                    f"non-finite values")
    files.assert_unchanged()
