"""What a script does with a user's mistake: one line on stderr naming it and a non-zero exit, no traceback."""
import sys
from contextlib import contextmanager

EXIT_BAD_INPUT = 2  # the command line, a config or an input file is wrong
EXIT_FAILED = 1  # the inputs were fine but the run failed (e.g. a non-finite loss)
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
def one_line_errors(prog: str, code: int = EXIT_BAD_INPUT):
    """Inside it, a ValueError (a bad value, a refused file) or an OSError (a missing file, a path that
    is a folder, no permission, a full disk) ends the script with one line. Library code raises these
    with messages that name the file, key or value; anything else is a bug and keeps its traceback."""
    try:
        yield
    except (ValueError, OSError) as e:
        fail(prog, e, code)
