"""What a script does with a user's mistake: one line on stderr naming it and a non-zero exit, no traceback."""
import re
import sys
from contextlib import contextmanager
from typing import Callable

EXIT_BAD_INPUT = 2  # the command line, a config or an input file is wrong
EXIT_FAILED = 1  # the inputs were fine but the run failed (e.g. a non-finite loss)
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C
# torch's CPU allocator fails with a RuntimeError, its CUDA one with torch.OutOfMemoryError (a RuntimeError)
CPU_ALLOCATION_FAILED = "DefaultCPUAllocator: can't allocate memory"
ALLOCATION_ASKED = re.compile(r"[Tt]ried to allocate (\d+(?:\.\d+)? ?[A-Za-z]+)")
WORKER_TRACEBACK = "Original Traceback (most recent call last)"  # torch.utils.data's re-raised worker errors


def fail(prog: str, message, code: int = EXIT_BAD_INPUT):
    """The one-line error of a script, and its exit."""
    print(f"{prog}: error: {' '.join(_text(message).split())}", file=sys.stderr)
    sys.exit(code)


def _text(message) -> str:
    """The message; for an error that a DataLoader worker raised (torch re-raises it with the worker's
    whole traceback in its text), the original error's own message."""
    text = str(message)
    if isinstance(message, BaseException) and WORKER_TRACEBACK in text:
        last = text.strip().splitlines()[-1]
        name, _, original = last.partition(": ")
        if name.split(".")[-1] == type(message).__name__:
            return original
    return text


@contextmanager
def interrupt_line(prog: str, how_to_go_on: Callable[[], str]):
    """Ctrl-C ends the script with one line saying how to go on (`how_to_go_on()`, asked then), not a
    traceback."""
    try:
        yield
    except KeyboardInterrupt:
        fail(prog, f"interrupted; {how_to_go_on()}", EXIT_INTERRUPTED)


def is_out_of_memory(error: BaseException) -> bool:
    return (isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
            or (isinstance(error, RuntimeError) and CPU_ALLOCATION_FAILED in str(error)))


@contextmanager
def out_of_memory_line(prog: str, sizes: Callable[[], str]):
    """Running out of memory ends the script with one line naming the sizes that decide it
    (`sizes()`, e.g. the model's width and the batch size) and the allocation that failed."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        asked = ALLOCATION_ASKED.search(str(e))
        tried = f" (an allocation of {asked.group(1)} failed)" if asked else ""
        fail(prog, f"out of memory with {sizes()}{tried}: lower them", EXIT_FAILED)


@contextmanager
def one_line_errors(prog: str, code: int = EXIT_BAD_INPUT):
    """Inside it, a ValueError (a bad value, a refused file) or an OSError (a missing file, a path that
    is a folder, no permission, a full disk) ends the script with one line. Library code raises these
    with messages that name the file, key or value; anything else is a bug and keeps its traceback."""
    try:
        yield
    except (ValueError, OSError) as e:
        fail(prog, e, code)
