"""What the commands share: policy loading, progress bars, reports, exit codes."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress

from tqdm import tqdm

from lifecycle.cli.report import JsonlReport, Report, TextReport
from lifecycle.errors import InputError, LifecycleError, first_line
from lifecycle.policy import Policy
from lifecycle.reader import InputLine, input_size
from lifecycle.relay import MAX_SECONDS
from lifecycle.rules import DEFAULT_POLICY

#: Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_ERROR = 2
#: A bug: an exception no command expects (``EX_SOFTWARE`` of sysexits.h), traceback shown.
EXIT_BUG = 70
EXIT_INTERRUPTED = 130
#: SIGTERM, as a shell reports a process it ended: 128 + 15.
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, so that it unwinds as after Ctrl-C.

    A ``KeyboardInterrupt`` to everything that handles one (transactions roll back,
    temporary files are removed); only its exit code and message differ.
    """


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM ends the command as SIGINT does, cleaning up.

    Its default ended ``check`` and ``ingest`` on the spot: the ``--sort-by
    timestamp`` spill (about the size of the input) was left in the temporary
    directory, and nothing was said. ``relay`` stops on SIGTERM in its own way and
    does not use this. Only the main thread may set a signal handler: elsewhere
    (the command run from a thread) SIGTERM keeps its handler.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(_signum: int, _frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code(run: Callable[[], int]) -> int:
    """Run a command; turn the errors a user can act on into a message and an exit code.

    Anything else (a bug) propagates with its traceback, for :func:`main` to exit 70.
    """
    try:
        return run()
    except LifecycleError as exc:
        complain(f"lifecycle: error: {exc}")
        return EXIT_ERROR
    except Terminated:
        complain("lifecycle: terminated")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        complain("lifecycle: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        sys.stderr.close()
        return EXIT_ERROR
    except OSError as exc:  # the environment, not a bug: a full disk, a temp dir not writable
        where = f" ({exc.filename})" if exc.filename else ""
        complain(f"lifecycle: error: {exc.strerror or exc}{where}")
        return EXIT_ERROR
    except Exception as exc:
        if not type(exc).__module__.startswith(("sqlalchemy", "alembic")):
            raise
        complain(f"lifecycle: database error: {first_line(exc)}")
        return EXIT_ERROR


def bug() -> int:
    """Report the exception being handled as a bug, with its traceback; exit 70, a code no
    script takes for "rejected"."""
    complain(traceback.format_exc().removesuffix("\n"))
    complain("lifecycle: internal error (a bug, please report it with the traceback above)")
    return EXIT_BUG


def complain(line: str) -> None:
    """Write ``line`` to stderr, if stderr can be written (``2>/dev/full``): the exit code
    says what happened either way, and a failed write must not turn it into another."""
    with suppress(OSError):
        print(line, file=sys.stderr, flush=True)


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    return _at_least(1, text)


def non_negative(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    return _at_least(0, text)


def seconds(text: str) -> float:
    """An argparse type: a duration in seconds, finite and above zero.

    A negative wait would retry without pause, an infinite one never, and the HTTP
    client refuses a timeout of zero, or one its clock cannot hold, with a traceback.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds above 0 and at most {MAX_SECONDS} (a week), got {text}"
        )
    return value


def _at_least(low: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def add_format_argument(parser: argparse.ArgumentParser, *formats: str) -> None:
    """``--format``, one of ``formats``; the first is the default."""
    parser.add_argument(
        "--format",
        choices=formats,
        default=formats[0],
        help=f"output format (default: {formats[0]})",
    )


def load_policy(spec: str | None) -> Policy:
    """The policy named by ``module:attribute`` (the default policy when None)."""
    if not spec:
        return DEFAULT_POLICY
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InputError(f"--policy {spec!r}: expected module:attribute")
    _importable_from_here()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"--policy {spec!r}: cannot import {module_name}: {exc}") from exc
    except LifecycleError:
        raise
    except (Exception, SystemExit) as exc:
        # The user's own module failed: its traceback is what they need to fix it, and the
        # exit code must still say "error" (2), not "rejections found" (1). A module that
        # exits as it is imported (a script whose main() runs on import) is such a failure
        # too: let through, its SystemExit ended the command silently with its own code.
        complain(traceback.format_exc().removesuffix("\n"))
        raise InputError(
            f"--policy {spec!r}: importing {module_name} raised {type(exc).__name__}: {exc}"
        ) from exc
    if not hasattr(module, attribute):
        raise InputError(f"--policy {spec!r}: {module_name} has no {attribute}")
    policy = getattr(module, attribute)
    if not isinstance(policy, Policy):
        kind = type(policy).__name__
        raise InputError(
            f"--policy {spec!r}: {attribute} is of type {kind}, not a lifecycle Policy"
        )
    return policy


def _importable_from_here() -> None:
    """Let ``--policy`` name a module of the working directory, as ``python -m`` would.

    An installed console script's path starts with its own directory, not the working
    one, so ``--policy myapp.tracking:POLICY`` run from the project failed to import.
    The working directory goes last: it never shadows an installed module.
    """
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)


def make_report(format: str, show: int = 10) -> Report:
    """The report for ``--format``."""
    return JsonlReport() if format == "jsonl" else TextReport(show=show)


class Progress:
    """A byte-based progress bar on stderr, shown only when stderr is a terminal."""

    _EVERY = 1 << 16

    def __init__(self, bar: tqdm | None) -> None:  # type: ignore[type-arg]
        self.bar = bar
        self.pending = 0

    def advance(self, nbytes: int) -> None:
        """Count ``nbytes`` more read; the bar is redrawn every 64 KiB."""
        if self.bar is None:
            return
        self.pending += nbytes
        if self.pending >= self._EVERY:
            self.bar.update(self.pending)
            self.pending = 0


@contextmanager
def progress(paths: Sequence[str], desc: str) -> Iterator[Progress]:
    """A :class:`Progress` over the input files (inactive when stderr is not a terminal).

    When the command is done the bar is full: the bytes of blank lines and of a byte
    order mark are read but never counted.
    """
    if not sys.stderr.isatty():
        yield Progress(None)
        return
    with tqdm(
        total=input_size(paths), unit="B", unit_scale=True, desc=desc, file=sys.stderr, leave=False
    ) as bar:
        tracker = Progress(bar)
        yield tracker
        bar.update(max(tracker.pending, (bar.total or 0) - bar.n))


def counted(lines: Iterable[InputLine], bar: Progress) -> Iterator[InputLine]:
    """``lines``, each advancing ``bar`` by its bytes as it is read.

    With ``--sort-by timestamp`` the input is read whole, to be sorted, before the first
    message is judged: the bar follows that reading (it had stayed at 0%, or not shown).
    """
    for line in lines:
        bar.advance(line.oversize or len(line.raw))
        yield line
