"""The recorder that runs inside a student's kernel during grading.

Around each trusted check cell the grader runs ``begin(grade_id, names, globals())`` and
``end()``. ``begin`` replaces every learner-defined name the check uses by a recording wrapper
(functions) or exports its value (data); while the check runs, every call of a learner function
is written down with its arguments and its result, encoded by ``codec``; ``end`` restores the
names and writes ``<grade_id>.json`` + ``<grade_id>.bin`` into the record folder. A context manager
a learner function returns is handed to the check wrapped too, and its entering and leaving are
written down as steps of their own (02.9 ``temporary_hooks``: the hooks attach on entering and must
be gone after leaving, even with an exception). After every call and step, the state of each spy
object the check passed in that describes its state (``_rsl_state``: 02.9's model spy lists the
hooks attached to the model) is written down, for the grader to put its own spy in.

Nothing here is trusted. A student can replace or break this recorder, but all it produces is a
claim "my function returned X for input Y"; the grader checks every claim in its own process
against the truth for its own inputs, so a tampered record can only lose points.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from typing import Any

from .codec import Encoder, _is_tensor, type_name

MAX_CALLS = 10_000


class Recorder:
    def __init__(self, folder: str):
        self.folder = folder
        # held open: renaming or deleting the folder's path later does not lose the records
        # (O_PATH: the folder may be writable and not readable, mode 1733)
        self.dir_fd = os.open(
            folder, getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
        )
        self._reset()

    def __del__(self):
        try:
            os.close(self.dir_fd)
        except (AttributeError, OSError):
            pass

    def _reset(self) -> None:
        self.grade_id = None
        self.calls: list[dict] = []
        self.names: dict[str, Any] = {}
        self.saved: dict[str, Any] = {}
        self.namespace: dict | None = None
        self.handles: dict[int, Any] = {}
        self.encoder = Encoder(on_callable=self._handle_for)

    def _handle_for(self, fn) -> int:
        handle = len(self.handles) + 1
        self.handles[handle] = fn
        return handle

    def begin(self, grade_id: str, names: list[str], namespace: dict) -> None:
        self._reset()
        self.grade_id = grade_id
        self.namespace = namespace
        for name in names:
            if name not in namespace:
                self.names[name] = {"missing": True}
                continue
            value = namespace[name]
            self.saved[name] = value
            encoded = self.encoder.encode(value)
            self.names[name] = {"value": encoded}
            if isinstance(encoded, dict) and "__callable__" in encoded:
                namespace[name] = self._wrap(encoded["__callable__"], value)

    def _wrap(self, handle: int, fn):
        recorder = self

        def recorded(*args, **kwargs):
            entry = {"handle": handle}
            if len(recorder.calls) < MAX_CALLS:
                entry["args"] = recorder.encoder.encode(list(args))
                entry["kwargs"] = recorder.encoder.encode(dict(kwargs))
                recorder.calls.append(entry)
            # callbacks the check passed in (a spy, a hook to call) are recorded so the grader can
            # make the same calls; tensors passed in are compared afterwards to record in-place
            # edits
            args, kwargs = list(args), dict(kwargs)
            before = {}
            stateful = []  # spies whose state is written down after the call and its steps
            for key, value in [*enumerate(args), *kwargs.items()]:
                if _records_state(value):
                    stateful.append((key, value))
                elif _is_plain_function(value) or _records_methods(value):
                    callback = (
                        recorder._callback(entry, key, value)
                        if _is_plain_function(value)
                        else _MethodRecorder(value, entry, key, recorder.encoder)
                    )
                    if isinstance(key, int):
                        args[key] = callback
                    else:
                        kwargs[key] = callback
                elif _is_tensor(value):
                    before[key] = value.detach().clone()
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:  # recorded, then re-raised unchanged
                entry["error"] = _error_record(error)
                recorder._record_states(entry, stateful)
                raise
            recorder._record_states(entry, stateful)
            for key, old in before.items():
                new = args[key] if isinstance(key, int) else kwargs[key]
                if not _same_tensor(old, new):
                    entry.setdefault("mutated", []).append([key, recorder.encoder.encode(new)])
            encoded = recorder.encoder.encode(result)
            entry["result"] = encoded
            if isinstance(encoded, dict) and "__callable__" in encoded:
                return recorder._wrap(encoded["__callable__"], result)
            if isinstance(encoded, dict) and "__context__" in encoded:
                return _ContextRecorder(recorder, encoded["__context__"], result, stateful)
            return result

        try:
            functools.update_wrapper(recorded, fn, updated=())  # a class's __dict__ is not copied
        except (AttributeError, TypeError):
            recorded.__name__ = str(getattr(fn, "__name__", "function"))
        recorded.__wrapped__ = fn
        return recorded

    def _step(self, handle: int, method: str, args: list) -> dict:
        """Write down one step (``__enter__``, ``__exit__``) of a recorded context manager."""
        entry = {"handle": handle, "method": method}
        if len(self.calls) < MAX_CALLS:
            entry["args"] = self.encoder.encode(list(args))
            self.calls.append(entry)
        return entry

    def _record_states(self, entry: dict, stateful: list) -> None:
        states = []
        for key, spy in stateful:
            try:
                states.append([key, self.encoder.encode(spy._rsl_state())])
            except Exception:  # the grader then finds no state and its own check decides
                continue
        if states:
            entry["states"] = states

    def _callback(self, entry: dict, key, fn):
        encoder = self.encoder

        def callback(*args, **kwargs):
            call = {
                "arg": key,
                "args": encoder.encode(list(args)),
                "kwargs": encoder.encode(dict(kwargs)),
            }
            entry.setdefault("callbacks", []).append(call)
            return fn(*args, **kwargs)

        try:
            functools.update_wrapper(callback, fn)
        except (AttributeError, TypeError):
            pass
        return callback

    def end(self) -> None:
        if self.grade_id is None:
            return
        if self.namespace is not None:
            self.namespace.update(self.saved)
        record = {
            "grade_id": self.grade_id,
            "names": self.names,
            "calls": self.calls,
            "handles": {str(h): type_name(f) for h, f in self.handles.items()},
        }
        base, fd = self.grade_id, self.dir_fd

        def opener(path, flags):
            return os.open(path, flags, 0o600, dir_fd=fd)

        with open(base + ".bin", "wb", opener=opener) as f:
            f.write(self.encoder.blob)
        with open(base + ".json.tmp", "w", opener=opener) as f:
            json.dump(record, f)
        os.replace(base + ".json.tmp", base + ".json", src_dir_fd=fd, dst_dir_fd=fd)
        self._reset()


def _records_methods(value) -> bool:
    """A spy object a check passes in (``course_utils.checks``), whose listed method calls the
    grader replays on its own spy (``_rsl_record_methods``, ``_rsl_replay``)."""
    cls = type(value)
    return str(getattr(cls, "__module__", "")).startswith("course_utils.checks") and isinstance(
        getattr(cls, "_rsl_record_methods", None), tuple
    )


def _records_state(value) -> bool:
    """A spy object a check passes in that describes, as plain data, the state the learner's code
    may change (``_rsl_state``; 02.9: which hooks are attached to the model where); the grader puts
    its own spy in the recorded state after the same call or step (``_rsl_set_state``)."""
    cls = type(value)
    return str(getattr(cls, "__module__", "")).startswith("course_utils.checks") and callable(
        getattr(cls, "_rsl_state", None)
    )


def _error_record(error: BaseException) -> dict:
    return {"type": type(error).__name__, "message": str(error)[:2000]}


class _ContextRecorder:
    """Stands for a context manager a learner function returned: enters and leaves it as the check
    asks, and writes down each step (the exception it was left with, what it returned or raised,
    the state of the check's spies afterwards), so the grader can take the same steps."""

    def __init__(self, recorder: Recorder, handle: int, manager, stateful: list):
        self._rsl = (recorder, handle, manager, stateful)

    def __enter__(self):
        recorder, handle, manager, stateful = self._rsl
        entry = recorder._step(handle, "__enter__", [])
        try:
            result = type(manager).__enter__(manager)  # looked up on the class, as `with` does
        except BaseException as error:
            entry["error"] = _error_record(error)
            recorder._record_states(entry, stateful)
            raise
        recorder._record_states(entry, stateful)
        entry["result"] = recorder.encoder.encode(result)
        return result

    def __exit__(self, exc_type, exc, tb):
        recorder, handle, manager, stateful = self._rsl
        kind = None if exc_type is None else str(getattr(exc_type, "__name__", "Exception"))
        entry = recorder._step(handle, "__exit__", [kind])
        try:
            swallowed = bool(type(manager).__exit__(manager, exc_type, exc, tb))
        except BaseException as error:
            entry["error"] = _error_record(error)
            if exc is not None and error is exc:  # the exception it was left with, raised again
                entry["error"]["reraised"] = True
            recorder._record_states(entry, stateful)
            raise
        recorder._record_states(entry, stateful)
        entry["result"] = swallowed
        return swallowed

    def __getattr__(self, attr):
        return getattr(object.__getattribute__(self, "_rsl")[2], attr)


class _MethodRecorder:
    """Stands for a check's spy inside the learner's function: forwards everything, and writes down
    each call of a method the spy lists, so the grader can make the same call on its own spy."""

    def __init__(self, target, entry: dict, key, encoder):
        object.__setattr__(self, "_rsl", (target, entry, key, encoder))

    def __getattr__(self, attr):
        target, entry, key, encoder = object.__getattribute__(self, "_rsl")
        value = getattr(target, attr)
        if attr not in type(target)._rsl_record_methods:
            return value

        def method(*args, **kwargs):
            entry.setdefault("callbacks", []).append(
                {
                    "arg": key,
                    "method": attr,
                    "args": encoder.encode(list(args)),
                    "kwargs": encoder.encode(dict(kwargs)),
                }
            )
            return value(*args, **kwargs)

        return method

    def __setattr__(self, attr, value):
        setattr(object.__getattribute__(self, "_rsl")[0], attr, value)

    def __call__(self, *args, **kwargs):
        return object.__getattribute__(self, "_rsl")[0](*args, **kwargs)


def _is_plain_function(value) -> bool:
    return (
        inspect.isfunction(value) or inspect.ismethod(value) or isinstance(value, functools.partial)
    )


def _same_tensor(old, new) -> bool:
    import torch

    try:
        return (
            (type(new) is type(old) or isinstance(new, torch.Tensor))
            and old.shape == new.shape
            and bool(torch.equal(old, new.detach()))
        )
    except Exception:  # a hostile object: treat as changed, the grader decides
        return False
