"""What a script says when the machine, not the input, stops it (issue 23): a file-size limit or a full
disk names the file, Ctrl-C says how to resume, an allocation too large names the sizes asked for. Each
is one line, no traceback, and changes no file that was there."""
import resource
import signal
import subprocess
import sys

from cli_check import REPO, SCRIPT_ENV, Files, Result, assert_one_line_error
from train_support import FAST_ARGS, digits_subset, tiny_config

# A subprocess under a file-size limit must not write bytecode: a .pyc cut at the limit breaks later imports.
ENV = {**SCRIPT_ENV, "PYTHONDONTWRITEBYTECODE": "1"}


def run_limited(argv, file_size: int, timeout: float = 300) -> Result:
    """`python <argv>` with files limited to `file_size` bytes; SIGXFSZ ignored, so that a write beyond
    the limit fails with EFBIG ([Errno 27]) as a full disk fails with ENOSPC."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    done = subprocess.run([sys.executable, *map(str, argv)], cwd=REPO, capture_output=True, text=True, env=ENV,
                          timeout=timeout, preexec_fn=limit)
    return Result(done.returncode, done.stdout, done.stderr)


def test_a_file_size_limit_names_the_file_sampling_could_not_write(tiny_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("the user's\n")
    files = Files(tmp_path)
    result = run_limited(["main_sample.py", "--checkpoint", tiny_dir, "--output_dir", out, "--num_samples", 4,
                          "--steps_per_scale", 1, "--cfg", 0, "--device", "cpu"], file_size=2000)
    assert_one_line_error(result, "main_sample.py", "[Errno 27] File too large", str(out / "shards" / "shard_0_4.npz"),
                          earlier_lines=True)
    files.assert_unchanged(new_files=True)


def test_a_file_size_limit_names_the_checkpoint_training_could_not_write(tiny_dir, tmp_path_factory, tmp_path):
    # torch.save itself reports a failed write as "unexpected pos": the file and the cause are lost
    data = digits_subset(tmp_path_factory, per_class=1)
    config = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **FAST_ARGS)
    files = Files(tmp_path)
    out = tmp_path / "out"
    result = run_limited(["main.py", "--config", config, "--data_path", data, "--output_dir", out], file_size=100_000)
    assert_one_line_error(result, "main.py", "(File too large)", f"checkpoint {out / 'checkpoint-0.pth'}",
                          "no checkpoint was written", code=1, earlier_lines=True)
    files.assert_unchanged(new_files=True)
