"""The trusted side: replay each graded cell in the grader's own process on the kernel's records.

``Judge(lesson)`` runs the solution notebook once, in this process (no student code involved), and
keeps a snapshot of its namespace at every graded cell: the model, the check module and the
reference inputs as the lesson built them. ``judge.grade(grade_cell, record)`` then runs the trusted
graded cell (hidden tests included) on that snapshot, with every learner name replaced by what the
student's kernel produced: data as decoded values, functions as ``Replay`` stand-ins that return
the outputs the kernel recorded, after checking that the inputs are the ones this process passes,
and context managers they returned as ``ReplayContext`` stand-ins whose entering and leaving repeat
the recorded steps (the state the check's spies were left in, what ``__exit__`` did with the
exception) on this process's own objects.
The pass/fail decision is therefore made by this process's own ``course_utils.checks``, against the
truth this process computes; the kernel's printed output and its own check verdicts are ignored.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from dataclasses import dataclass

from . import codec
from .lesson import GradeCell, Lesson

MAX_JSON_BYTES = 16 << 20  # the JSON half of one record file
MAX_BLOB_BYTES = codec.MAX_BLOB_BYTES  # its tensor bytes
MAX_CALLS_PER_CELL = 10_000  # recorded calls of learner functions in one graded cell
MAX_CALLBACKS_PER_CELL = 10_000  # calls the grader re-issues for one graded cell
MAX_CALLBACKS_PER_SUBMISSION = 50_000
MAX_DECODED_PER_CELL = 256 << 20  # tensor bytes decoded (copies) while replaying one cell
MAX_DECODED_PER_SUBMISSION = 1 << 30
SELF_TEST_SEED = 20260101
JUDGE_TIMEOUT_S = 120.0  # one judge step (reading and replaying one graded cell)


class JudgeTimeout(
    BaseException
):  # not an Exception: the checks' own `except Exception` let it through
    """A judge step ran past its time limit."""


class Budget:
    """What replaying one submission may cost the grader: re-issued callbacks and decoded bytes,
    counted per graded cell and for the whole submission (a forged record cannot grow the
    worker)."""

    def __init__(self):
        self.callbacks = self.decoded = 0
        self.cell_callbacks = self.cell_decoded = 0

    def start_cell(self) -> None:
        self.cell_callbacks = self.cell_decoded = 0

    def charge_callback(self) -> None:
        self.callbacks += 1
        self.cell_callbacks += 1
        if (
            self.cell_callbacks > MAX_CALLBACKS_PER_CELL
            or self.callbacks > MAX_CALLBACKS_PER_SUBMISSION
        ):
            raise codec.DecodeError("too many recorded callbacks to replay")

    def charge_bytes(self, nbytes: int) -> None:
        self.decoded += nbytes
        self.cell_decoded += nbytes
        if self.cell_decoded > MAX_DECODED_PER_CELL or self.decoded > MAX_DECODED_PER_SUBMISSION:
            raise codec.DecodeError("the record decodes to too much data")


class ReplayMismatch(Exception):
    """The grader called a learner function with inputs the kernel has no recorded output for."""


@dataclass
class Verdict:
    passed: bool
    message: str


def _tensor_like(value) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def same_input(ours, theirs, atol: float = 1e-4, rtol: float = 1e-3) -> bool:
    """Whether an argument the grader passes matches the one the kernel recorded."""
    import torch

    if isinstance(theirs, codec.Opaque):
        return (
            not isinstance(ours, (str, int, float, list, tuple, dict, type(None)))
            and not _tensor_like(ours)
            and theirs.type_name == codec.type_name(ours)
        )
    if isinstance(theirs, Replay):
        return callable(ours)
    if isinstance(theirs, ReplayContext):
        return codec.is_context_manager(ours)
    if _tensor_like(ours):
        if (
            not isinstance(theirs, torch.Tensor)
            or ours.shape != theirs.shape
            or ours.dtype != theirs.dtype
        ):
            return False
        a, b = ours.detach().cpu(), theirs
        if a.is_floating_point() or a.is_complex():
            return bool(torch.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True))
        return bool(torch.equal(a, b))
    if type(ours) in (list, tuple):
        return (
            type(theirs) is type(ours)
            and len(ours) == len(theirs)
            and all(same_input(a, b, atol, rtol) for a, b in zip(ours, theirs, strict=False))
        )
    if type(ours) is dict:
        return (
            type(theirs) is dict
            and ours.keys() == theirs.keys()
            and all(same_input(ours[k], theirs[k], atol, rtol) for k in ours)
        )
    if type(ours) is float and type(theirs) is float:
        return math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-12) or (
            math.isnan(ours) and math.isnan(theirs)
        )
    if ours is None or type(ours) in (bool, int, str, float):
        return type(theirs) is type(ours) and theirs == ours
    # anything else the grader passes (the model, a hook point...) is matched by type
    return isinstance(theirs, codec.Opaque) and theirs.type_name == codec.type_name(ours)


class Replay:
    """Stands for a learner function: returns the kernel's recorded outputs, in order."""

    def __init__(self, state: _ReplayState, handle: int, name: str):
        self._state, self._handle = state, handle
        self.__name__ = self.__qualname__ = name

    def __call__(self, *args, **kwargs):
        return self._state.next_result(self._handle, self.__name__, list(args), dict(kwargs))

    def __repr__(self) -> str:
        return f"<your function {self.__name__}>"


class ReplayContext:
    """Stands for a context manager a learner function returned: entering and leaving it take the
    steps the kernel recorded, in order, after checking that it is left with the same kind of
    exception (or none) as in the kernel: the check's spies are put in the recorded state, and
    ``__exit__`` returns, raises, or lets the exception through as it did there."""

    def __init__(self, state: _ReplayState, handle: int, name: str):
        self._state, self._handle, self._name = state, handle, name
        self._args: list = []  # the call that returned it: the spies its steps refer to
        self._kwargs: dict = {}

    def _bind(self, args: list, kwargs: dict, name: str) -> None:
        self._args, self._kwargs = args, kwargs
        self._name = f"the context manager `{name}` returned"

    def __enter__(self):
        return self._state.next_step(self, "__enter__", [], None)

    def __exit__(self, exc_type, exc, tb):
        kind = None if exc_type is None else exc_type.__name__
        return bool(self._state.next_step(self, "__exit__", [kind], exc))

    def __repr__(self) -> str:
        return f"<{self._name}>"


class _ReplayState:
    def __init__(self, record: dict, blob: bytes, budget: Budget | None = None):
        self.budget = budget or Budget()
        self.decoder = codec.Decoder(
            blob,
            on_callable=lambda h, n: Replay(self, h, n),
            on_tensor=self.budget.charge_bytes,
            on_context=lambda h, n: ReplayContext(self, h, n),
        )
        self.queues: dict[int, list[dict]] = {}
        calls = record.get("calls", [])
        if type(calls) is not list or len(calls) > MAX_CALLS_PER_CELL:
            raise codec.DecodeError("bad calls list")
        for call in calls:
            if type(call) is not dict or type(call.get("handle")) is not int:
                raise codec.DecodeError("bad call")
            self.queues.setdefault(call["handle"], []).append(call)

    def next_result(self, handle: int, name: str, args: list, kwargs: dict):
        queue = self.queues.get(handle, [])
        if not queue:
            raise ReplayMismatch(
                f"no recorded output: your notebook did not complete this call of `{name}` "
                "during grading (an earlier error, a timeout, or an altered check)"
            )
        call = queue.pop(0)
        if "method" in call:
            raise ReplayMismatch(f"`{name}` is recorded as a context manager, not a function")
        if "args" not in call:
            raise ReplayMismatch(f"too many calls of `{name}` to record")
        theirs_args = self.decoder.decode(call["args"])
        theirs_kwargs = self.decoder.decode(call.get("kwargs", {"__dict__": []}))
        if not (same_input(args, theirs_args) and same_input(kwargs, theirs_kwargs)):
            raise ReplayMismatch(
                f"`{name}` was called with different inputs in your notebook than by the grader "
                "(was the check cell changed?)"
            )
        self._reissue_callbacks(call, name, args, kwargs)
        self._apply_states(call, f"`{name}`", args, kwargs)
        self._raise_recorded_error(call, f"`{name}`", None)
        if "result" not in call:
            raise ReplayMismatch(f"`{name}` did not return (interrupted or killed)")
        self._apply_mutations(call, name, args, kwargs)
        result = self.decoder.decode(call["result"])
        if isinstance(result, ReplayContext):
            result._bind(args, kwargs, name)
        return result

    def next_step(self, context: ReplayContext, method: str, args: list, exc):
        """Enter or leave (``method``) a recorded context manager, as the kernel did; ``exc`` is
        the exception it is left with, if any."""
        label = context._name
        queue = self.queues.get(context._handle, [])
        if not queue:
            raise ReplayMismatch(
                f"no recorded step: in your notebook {label} was not used this way during grading "
                "(an earlier error, a timeout, or an altered check)"
            )
        call = queue.pop(0)
        if call.get("method") != method:
            raise ReplayMismatch(f"{label} was used differently in your notebook ({method})")
        if "args" not in call:
            raise ReplayMismatch(f"too many calls and steps to record ({label})")
        if not same_input(args, self.decoder.decode(call["args"])):
            if exc is not None:  # the grader's own error in the with-block: its check reports it
                return False
            raise ReplayMismatch(
                f"{label} was left with a different exception in your notebook than in the "
                "grader's check (was the check cell changed?)"
            )
        self._apply_states(call, label, context._args, context._kwargs)
        self._raise_recorded_error(call, label, exc)
        if "result" not in call:
            raise ReplayMismatch(f"{label} did not finish {method} (interrupted or killed)")
        return self.decoder.decode(call["result"])

    @staticmethod
    def _raise_recorded_error(call: dict, label: str, exc) -> None:
        """Raise what the learner's code raised in the kernel (a fresh exception of that name; the
        exception the check itself raised, when the learner's ``__exit__`` raised it again)."""
        if "error" not in call:
            return
        error = call["error"] if type(call["error"]) is dict else {}
        kind, message = (
            str(error.get("type", "Error"))[:100],
            str(error.get("message", ""))[:2000],
        )
        if exc is not None and error.get("reraised") is True and kind == type(exc).__name__:
            raise exc
        if kind == "NotImplementedError":
            raise NotImplementedError(message)
        if kind == "KeyboardInterrupt":
            raise ReplayMismatch(f"{label} was interrupted (it ran past the time limit)")
        raise type(kind if kind.isidentifier() else "Error", (Exception,), {})(message)

    def _apply_states(self, call: dict, label: str, args: list, kwargs: dict) -> None:
        """Put the check's spies (02.9: the model's hooks) in the state the kernel recorded after
        this call or step."""
        states = call.get("states", [])
        if type(states) is not list:
            raise codec.DecodeError("bad states")
        for item in states:
            self.budget.charge_callback()
            if type(item) is not list or len(item) != 2:
                raise codec.DecodeError("bad state")
            target = self._argument(item[0], args, kwargs, label)
            cls = type(target)
            if not str(getattr(cls, "__module__", "")).startswith(
                "course_utils.checks"
            ) or not callable(getattr(cls, "_rsl_set_state", None)):
                raise ReplayMismatch(f"{label} changed an argument the grader cannot set")
            target._rsl_set_state(self.decoder.decode(item[1]))

    @staticmethod
    def _argument(key, args: list, kwargs: dict, label: str):
        if type(key) is int and 0 <= key < len(args):
            return args[key]
        if type(key) is str and key in kwargs:
            return kwargs[key]
        raise ReplayMismatch(
            f"{label}: the record refers to an argument {key!r} the grader did not pass"
        )

    def _reissue_callbacks(self, call: dict, name: str, args: list, kwargs: dict) -> None:
        """Make the calls the learner's code made to functions the check passed in (spies...)."""
        callbacks = call.get("callbacks", [])
        if type(callbacks) is not list:
            raise codec.DecodeError("bad callbacks")
        for callback in callbacks:
            self.budget.charge_callback()
            if type(callback) is not dict:
                raise codec.DecodeError("bad callback")
            target = self._argument(callback.get("arg"), args, kwargs, f"`{name}`")
            call_args = self.decoder.decode(callback.get("args", {"__list__": []}))
            call_kwargs = self.decoder.decode(callback.get("kwargs", {"__dict__": []}))
            if (
                type(call_args) is not list
                or type(call_kwargs) is not dict
                or not all(type(k) is str for k in call_kwargs)
            ):
                raise codec.DecodeError("bad callback arguments")
            if (
                "method" in callback
            ):  # a method of a check's spy object: its bookkeeping, on our spy
                method = callback["method"]
                if type(method) is not str or method not in getattr(
                    type(target), "_rsl_record_methods", ()
                ):
                    raise ReplayMismatch(f"`{name}` called a method the grader cannot repeat")
                target._rsl_replay(method, *call_args, **call_kwargs)
                continue
            if not callable(target):
                raise ReplayMismatch(f"`{name}` called an argument that is not a function")
            target(*call_args, **call_kwargs)

    def _apply_mutations(self, call: dict, name: str, args: list, kwargs: dict) -> None:
        """Repeat the in-place edits the learner's code made to tensors the check passed in."""
        import torch

        mutated = call.get("mutated", [])
        if type(mutated) is not list:
            raise codec.DecodeError("bad mutations")
        for item in mutated:
            self.budget.charge_callback()
            if type(item) is not list or len(item) != 2:
                raise codec.DecodeError("bad mutation")
            target = self._argument(item[0], args, kwargs, f"`{name}`")
            value = self.decoder.decode(item[1])
            if (
                not isinstance(target, torch.Tensor)
                or not isinstance(value, torch.Tensor)
                or value.shape != target.shape
            ):
                raise ReplayMismatch(
                    f"`{name}` changed an argument in a way the grader cannot repeat"
                )
            with torch.no_grad():
                target.copy_(value.to(target.dtype))


def _read_regular(name: str, dir_fd: int, limit: int) -> bytes | None:
    """The bytes of ``name`` in the folder ``dir_fd``: a regular file only, never through a link,
    never blocking on a FIFO or device, at most ``limit`` bytes (checked on the open descriptor)."""
    import stat

    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as error:  # ELOOP: a symbolic link; ENXIO: a socket...
        raise codec.DecodeError(
            f"{name} is not a regular file ({os.strerror(error.errno)})"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise codec.DecodeError(f"{name} is not a regular file")
        if info.st_size > limit:
            raise codec.DecodeError(f"{name} is too large ({info.st_size} bytes)")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew after fstat
                raise codec.DecodeError(f"{name} is too large")
        return b"".join(chunks)
    finally:
        os.close(fd)


def open_record_folder(folder: str) -> int:
    """A descriptor of the record folder, opened without following a link (call it before the kernel
    starts: a kernel that later renames or replaces the folder cannot redirect the grader)."""
    return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def read_record(folder: str | int, grade_id: str) -> tuple[dict, bytes] | None:
    """The record of one graded cell from the folder (a path or a descriptor), or None if absent."""
    if os.sep in grade_id or grade_id.startswith("."):
        raise codec.DecodeError("bad grade id")
    dir_fd = folder if isinstance(folder, int) else open_record_folder(folder)
    try:
        text = _read_regular(grade_id + ".json", dir_fd, MAX_JSON_BYTES)
        if text is None:
            return None
        blob = _read_regular(grade_id + ".bin", dir_fd, MAX_BLOB_BYTES)
        if blob is None:
            return None
    finally:
        if not isinstance(folder, int):
            os.close(dir_fd)
    record = json.loads(text)
    if type(record) is not dict:
        raise codec.DecodeError("record is not an object")
    return record, blob


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise ``JudgeTimeout`` in this (main) thread after ``seconds``; elsewhere, no limit."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):
        yield
        return

    def expired(signum, frame):
        raise JudgeTimeout(f"judging took more than {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Judge:
    def __init__(self, lesson: Lesson):
        self.lesson = lesson
        self.snapshots: dict[str, dict] = {}
        self.self_test: dict[str, str] = {}  # grade_id -> the grader's verdict on the solution
        self._run_solution()
        self._test_replay_on_the_solution()

    def _run_solution(self) -> None:
        import matplotlib
        from IPython.core.interactiveshell import InteractiveShell

        matplotlib.use("Agg")
        shell = InteractiveShell.instance()
        grade_at = {c.index: c.grade_id for c in self.lesson.grade_cells}
        last = max(grade_at)
        sink = io.StringIO()
        for index, cell in enumerate(self.lesson.notebook.cells[: last + 1]):
            if cell.cell_type != "code":
                continue
            if index in grade_at:
                self.snapshots[grade_at[index]] = dict(shell.user_ns)
                continue
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                result = shell.run_cell(cell.source, store_history=False, silent=True)
            if not result.success:
                raise RuntimeError(
                    f"{self.lesson.path.name} cell {index} fails in the grader's process: "
                    f"{result.error_before_exec or result.error_in_exec!r}"
                )
            sink.seek(0)
            sink.truncate()

    def _test_replay_on_the_solution(self) -> None:
        """Record the solution's own functions under each graded cell and replay them here.

        A cell whose check observes effects the records cannot carry (changes to an object the check
        passed in that is neither a tensor nor a spy recording its calls or its state) fails this
        self-test, and the grader refuses the lesson, naming the cell: no point is ever decided by
        the kernel's own verdict (every graded cell of lessons 00-07 passes). The test uses only
        trusted code and data.
        """
        import tempfile

        from .. import checks
        from .capture import Recorder

        seed = SELF_TEST_SEED
        with tempfile.TemporaryDirectory(prefix="rsl-selftest-") as folder:
            for cell in self.lesson.grade_cells:
                namespace = dict(self.snapshots[cell.grade_id])
                recorder = Recorder(folder)
                recorder.begin(cell.grade_id, cell.learner_names, namespace)
                sink = io.StringIO()
                previous_seed = checks.set_grading_seed(seed)
                try:
                    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                        exec(self._compiled(cell), namespace)
                    ran = ""
                except Exception as error:  # checks.CheckFailed included
                    ran = f"{type(error).__name__}: {error}"
                finally:
                    checks.set_grading_seed(previous_seed)
                    recorder.end()
                if ran:
                    raise RuntimeError(
                        f"{self.lesson.path.name}: {cell.grade_id} fails on the solution: {ran}"
                    )
                verdict = self.grade(cell, folder, seed=seed)
                del checks.RESULTS[:]  # the self-test's results are not anybody's
                if not verdict.passed:
                    raise RuntimeError(
                        f"{self.lesson.path.name}: {cell.grade_id} cannot be graded by replay: "
                        f"replaying the solution's own records fails ({verdict.message}); its "
                        "check observes something the kernel's records do not carry"
                    )
                self.self_test[cell.grade_id] = verdict.message

    @staticmethod
    def _compiled(cell: GradeCell):
        from IPython.core.inputtransformer2 import TransformerManager

        return compile(
            TransformerManager().transform_cell(cell.source), f"<{cell.grade_id}>", "exec"
        )

    def grade(
        self,
        cell: GradeCell,
        record_folder: str | int,
        budget: Budget | None = None,
        seed: int | None = None,
        timeout: float = JUDGE_TIMEOUT_S,
    ) -> Verdict:
        """Judge one graded cell from the kernel's record; never raises, never runs past
        ``timeout``.

        ``budget`` is shared by the cells of one submission; ``seed`` is the grading seed the
        kernel's hidden tests drew their inputs from (``checks.grading_seed``)."""
        from .. import checks

        budget = budget or Budget()
        budget.start_cell()
        before = len(checks.RESULTS)
        previous_seed = checks.set_grading_seed(seed)
        try:
            with time_limit(timeout):
                return self._grade(cell, record_folder, budget)
        except JudgeTimeout as error:
            return Verdict(False, f"not graded: {error}")
        except MemoryError:
            return Verdict(False, "not graded: replaying the record needed too much memory")
        finally:
            checks.set_grading_seed(previous_seed)
            del checks.RESULTS[before:]  # the grader's own bookkeeping, nobody's result

    def _grade(self, cell: GradeCell, record_folder: str | int, budget: Budget) -> Verdict:
        from .. import checks

        try:
            found = read_record(record_folder, cell.grade_id)
        except (codec.DecodeError, ValueError, RecursionError, OSError) as error:
            return Verdict(False, f"unreadable record from the kernel: {error}")
        if found is None:
            return Verdict(False, "the check cell did not complete in your notebook's kernel")
        record, blob = found
        try:
            state = _ReplayState(record, blob, budget)
            names = record.get("names", {})
            if type(names) is not dict:
                raise codec.DecodeError("bad names")
            namespace = dict(self.snapshots[cell.grade_id])
            for name in cell.learner_names:
                entry = names.get(name)
                if type(entry) is not dict or entry.get("missing") or "value" not in entry:
                    namespace.pop(name, None)  # a NameError below, as in the student's notebook
                else:
                    namespace[name] = state.decoder.decode(entry["value"])
        except (codec.DecodeError, RecursionError, ValueError, TypeError) as error:
            return Verdict(False, f"unreadable record from the kernel: {error}")
        code = self._compiled(cell)
        before = len(checks.RESULTS)
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                exec(code, namespace)
        except checks.CheckFailed as failure:
            return Verdict(False, failure.result.line())
        except JudgeTimeout:
            raise
        except (
            Exception
        ) as error:  # NameError for a missing function, a ReplayMismatch, a decode problem...
            lines = [r.line() for r in checks.RESULTS[before:]]
            return Verdict(False, "; ".join(lines + [f"{type(error).__name__}: {error}"])[:2000])
        lines = [r.line().replace(f" — {checks.HIDDEN_NOTE}", "") for r in checks.RESULTS[before:]]
        return Verdict(
            True, "; ".join(dict.fromkeys(lines)) or "passed"
        )  # visible and hidden runs often agree
