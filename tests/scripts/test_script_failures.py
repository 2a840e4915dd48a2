"""What a script says when the machine, not the input, stops it (issue 23): a file-size limit or a full
disk names the file, Ctrl-C says how to resume, an allocation too large names the sizes asked for. Each
is one line, no traceback, and changes no file that was there."""
import resource
import shlex
import signal
import subprocess
import sys
import time

import yaml

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


def interrupt_once(argv, started, timeout: float = 240) -> Result:
    """`python <argv>`, sent SIGINT (Ctrl-C) once the path `started` exists."""
    # Ctrl-C's default action in the child, as in a shell: a disposition of SIG_IGN is inherited, and a
    # library in the test process may have set one (then the child never sees the interrupt).
    process = subprocess.Popen([sys.executable, *map(str, argv)], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + timeout
    while not started.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{started} never appeared"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=timeout)
    return Result(process.returncode, out, err)


def test_ctrl_c_in_training_says_how_to_resume(tiny_dir, tmp_path_factory, tmp_path):
    data = digits_subset(tmp_path_factory, per_class=1)
    config = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **{**FAST_ARGS, "epochs": 10_000})
    files = Files(tmp_path)
    out = tmp_path / "out"
    result = interrupt_once(["main.py", "--config", config, "--data_path", data, "--output_dir", out],
                            out / "checkpoint-last.pth")
    assert_one_line_error(result, "main.py", f"interrupted; resume with: python main.py --resume {out}", code=130,
                          earlier_lines=True)
    files.assert_unchanged(new_files=True)
    assert not list(out.glob(".*.tmp")) and not (out / ".run.lock").exists()


def test_ctrl_c_in_sampling_says_how_to_resume(tiny_dir, tmp_path):
    out = tmp_path / "run"
    argv = ["--checkpoint", str(tiny_dir), "--output_dir", str(out), "--num_samples", "100000", "--shard_size", "2",
            "--batch_size", "2", "--steps_per_scale", "1", "--cfg", "0", "--device", "cpu"]
    files = Files(tiny_dir)
    result = interrupt_once(["main_sample.py", *argv], out / "shards" / "shard_0_2.npz")
    assert_one_line_error(result, "main_sample.py", f"the finished shards in {out} are kept; resume with: python "
                                                    f"main_sample.py {shlex.join(argv)}", code=130, earlier_lines=True)
    files.assert_unchanged()
    assert (out / "shards" / "shard_0_2.npz").is_file() and not (out / ".run.lock").exists()


def test_a_model_too_wide_to_allocate_is_one_line_naming_its_size(tiny_dir, tmp_path_factory, tmp_path):
    data = digits_subset(tmp_path_factory, per_class=1)
    config = tiny_config(tmp_path / "tiny.yaml", tiny_dir, **FAST_ARGS)
    document = yaml.safe_load(config.read_text())
    document["model"]["llama_config"]["hidden_size"] = 2 ** 20  # a 4 TiB weight matrix
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    files = Files(tmp_path)

    def little_memory():  # whatever the machine: the process may not use more than this
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    done = subprocess.run([sys.executable, "main.py", "--config", str(config), "--data_path", str(data),
                           "--output_dir", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, env=ENV,
                          timeout=300, preexec_fn=little_memory)
    result = Result(done.returncode, done.stdout, done.stderr)
    assert_one_line_error(result, "main.py", "out of memory with model width 1048576 (2 layers) and batch_size 8 per "
                                             "process", "failed): lower them", code=1, earlier_lines=True)
    files.assert_unchanged()
