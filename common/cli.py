"""What a script does with a user's mistake: one line on stderr naming it and a non-zero exit, no traceback."""
import sys
from contextlib import contextmanager

EXIT_BAD_INPUT = 2  # the command line, a config or an input file is wrong
EXIT_FAILED = 1  # the inputs were fine but the run failed (e.g. a non-finite loss)


def fail(prog: str, message, code: int = EXIT_BAD_INPUT):
    """The one-line error of a script, and its exit."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


@contextmanager
def one_line_errors(prog: str, code: int = EXIT_BAD_INPUT):
    """Inside it, a ValueError (a bad value, a refused file) or an OSError (a missing file, a path that
    is a folder, no permission, a full disk) ends the script with one line. Library code raises these
    with messages that name the file, key or value; anything else is a bug and keeps its traceback."""
    try:
        yield
    except (ValueError, OSError) as e:
        fail(prog, e, code)
