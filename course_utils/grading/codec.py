"""Values crossing from a student's kernel to the grader: plain data only, never pickle.

The kernel encodes what a learner's function returned (and the arguments it was called with) as
JSON plus one binary blob for tensor bytes. The grader decodes that into fresh built-in objects
(``torch.Tensor``, ``list``, ``tuple``, ``dict``, ``str``, ``int``, ``float``, ``bool``, ``None``),
so nothing the student defined (a class whose ``__eq__`` is always true, a tensor subclass, an
object with a lying ``__repr__``) exists on the grader's side. Anything else arrives as an
``Opaque`` placeholder that only knows its type name, a callable as a
``{"__callable__": handle}`` that the grader replays from the recorded calls, and a context manager
(an object with ``__enter__`` and ``__exit__``) as a ``{"__context__": handle}`` whose entering and
leaving the grader replays the same way. Decoding is defensive: sizes, depth and dtypes are
checked.

This module is imported inside the student kernel too, so it must not import torch at module level.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 24
MAX_ITEMS = 100_000  # elements of one list/tuple/dict
MAX_STR = 1_000_000  # characters of one string
MAX_BLOB_BYTES = 256 << 20  # tensor bytes in one record file

_DTYPES = (
    "float64",
    "float32",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
    "complex64",
    "complex128",
)


class DecodeError(ValueError):
    """A record from the kernel is malformed or too large."""


class Opaque:
    """Stands for a value the kernel could not send as data; only its type name survives."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name} object (not plain data)>"


def type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


class Encoder:
    """Turns values into JSON-able data; tensor bytes go to ``self.blob``.

    ``on_callable(fn) -> handle`` decides how functions and context managers are represented (the
    kernel recorder wraps them so their later calls, or their entering and leaving, are recorded
    too).
    """

    def __init__(
        self, on_callable: Callable[[Any], int] | None = None, max_bytes: int = MAX_BLOB_BYTES
    ):
        self.blob = bytearray()
        self.on_callable = on_callable
        self.max_bytes = max_bytes

    def encode(self, value: Any, depth: int = 0) -> Any:
        try:
            return self._encode(value, depth)
        except RecursionError:
            return {"__opaque__": "nested too deeply"}
        except Exception as error:  # a hostile object may raise anything from its dunder methods
            return {
                "__opaque__": f"{type_name(value)} (could not be encoded: {type(error).__name__})"
            }

    def _encode(self, value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            return {"__opaque__": "nested too deeply"}
        # exact types only: a subclass of str/int/list can override __eq__, so it is rebuilt below
        kind = type(value)
        if value is None or kind is bool:
            return value
        if kind is int:
            return value if abs(value) < 2**63 else {"__bigint__": str(value)}
        if kind is float:
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if kind is str:
            return value[:MAX_STR]
        if kind in (list, tuple):
            items = list.__iter__(value) if kind is list else tuple.__iter__(value)
            items = [
                self._encode(v, depth + 1) for _, v in zip(range(MAX_ITEMS), items, strict=False)
            ]
            return {"__list__": items} if kind is list else {"__tuple__": items}
        if kind is dict:
            pairs = [
                [self._encode(k, depth + 1), self._encode(v, depth + 1)]
                for k, v in list(dict.items(value))[:MAX_ITEMS]
            ]
            return {"__dict__": pairs}
        if _is_tensor(value):
            return self._tensor(value)
        if _is_numpy_scalar(
            value
        ):  # np.sum(...), np.float32(...): a check compares them as numbers
            return self._encode(value.item(), depth)
        if _is_ndarray(value):
            import torch

            return {"__ndarray__": self._tensor(torch.from_numpy(value.copy()))["__tensor__"]}
        if self.on_callable is not None and is_context_manager(value):
            return {
                "__context__": self.on_callable(value),
                "name": type_name(value)[:200],
            }
        if self.on_callable is not None and _is_function(value):
            return {
                "__callable__": self.on_callable(value),
                "name": str(getattr(value, "__name__", "function"))[:200],
            }
        return {"__opaque__": type_name(value)}

    def _tensor(self, value) -> dict:
        import torch

        tensor = torch.Tensor.detach(value).cpu().contiguous()
        if type(tensor) is not torch.Tensor:  # a subclass: keep only its storage
            tensor = tensor.as_subclass(torch.Tensor)
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            return {"__opaque__": f"tensor of dtype {dtype}"}
        nbytes = tensor.numel() * tensor.element_size()
        if len(self.blob) + nbytes > self.max_bytes:
            return {"__opaque__": f"tensor too large ({nbytes} bytes)"}
        offset = len(self.blob)
        if nbytes:
            self.blob += tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        return {
            "__tensor__": {
                "dtype": dtype,
                "shape": list(tensor.shape),
                "offset": offset,
                "nbytes": nbytes,
            }
        }


def _is_function(value) -> bool:
    """Functions, methods, partials, builtins, and the learner's own callables: a class (a factory
    written as a class) or an object with ``__call__`` of a class defined in the notebook. A
    library's callable object (the model, a hook point) is sent by type instead: wrapping it in a
    function would change what the check sees. (A context manager is recorded as one before this
    is asked, even where it is callable, as a ``@contextmanager`` result is.)"""
    import functools
    import inspect

    if (
        inspect.isfunction(value)
        or inspect.ismethod(value)
        or inspect.isbuiltin(value)
        or isinstance(value, functools.partial)
    ):
        return True
    try:
        if not callable(value):
            return False
    except Exception:
        return False
    cls = value if isinstance(value, type) else type(value)
    return getattr(cls, "__module__", "") == "__main__"


def is_context_manager(value) -> bool:
    """An object usable in a ``with`` statement (its class has ``__enter__`` and ``__exit__``): a
    ``@contextmanager`` result, the learner's own class, or a library's (``model.hooks(...)``).
    What it does to the objects a check passed in happens when it is entered and left, so those
    steps are recorded, not the object."""
    if isinstance(value, type):
        return False
    cls = type(value)
    return callable(getattr(cls, "__enter__", None)) and callable(getattr(cls, "__exit__", None))


def _is_numpy_scalar(value) -> bool:
    import sys

    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.generic) and value.dtype.kind in "biuf"


def _is_tensor(value) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _is_ndarray(value) -> bool:
    import sys

    np = sys.modules.get("numpy")
    return np is not None and type(value) is np.ndarray and value.dtype.kind in "biufc"


class Decoder:
    """The inverse of ``Encoder``, run by the grader on untrusted input.

    ``on_callable(handle, name)`` builds the stand-in for a recorded function, ``on_context(handle,
    name)`` the one for a recorded context manager.
    """

    def __init__(
        self,
        blob: bytes,
        on_callable: Callable[[int, str], Any] | None = None,
        on_tensor: Callable[[int], None] | None = None,
        on_context: Callable[[int, str], Any] | None = None,
    ):
        self.blob = blob
        self.on_callable = on_callable
        self.on_context = on_context
        self.on_tensor = on_tensor  # charged with the bytes of every tensor decoded (a budget)

    def decode(self, data: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH + 2:
            raise DecodeError("record nested too deeply")
        if data is None or type(data) in (bool, int, float):
            return data
        if type(data) is str:
            if len(data) > MAX_STR:
                raise DecodeError("string too long")
            return data
        if type(data) is not dict or len(data) > 2:
            raise DecodeError(f"unexpected record item of type {type(data).__name__}")
        if "__list__" in data or "__tuple__" in data:
            items = data.get("__list__", data.get("__tuple__"))
            if type(items) is not list or len(items) > MAX_ITEMS:
                raise DecodeError("bad list")
            decoded = [self.decode(v, depth + 1) for v in items]
            return decoded if "__list__" in data else tuple(decoded)
        if "__dict__" in data:
            pairs = data["__dict__"]
            if type(pairs) is not list or len(pairs) > MAX_ITEMS:
                raise DecodeError("bad dict")
            out = {}
            for pair in pairs:
                if type(pair) is not list or len(pair) != 2:
                    raise DecodeError("bad dict item")
                key = self.decode(pair[0], depth + 1)
                try:
                    out[key] = self.decode(pair[1], depth + 1)
                except TypeError:
                    raise DecodeError("unhashable dict key") from None
            return out
        if "__tensor__" in data or "__ndarray__" in data:
            tensor = self._tensor(data.get("__tensor__", data.get("__ndarray__")))
            return tensor if "__tensor__" in data else tensor.numpy()
        if "__float__" in data:
            if data["__float__"] not in ("nan", "inf", "-inf"):
                raise DecodeError("bad float")
            return float(data["__float__"])
        if "__bigint__" in data:
            text = data["__bigint__"]
            if type(text) is not str or len(text) > 4000:
                raise DecodeError("bad integer")
            return int(text)
        if "__callable__" in data:
            handle, name = data["__callable__"], data.get("name", "function")
            if type(handle) is not int or type(name) is not str:
                raise DecodeError("bad callable")
            if self.on_callable is None:
                return Opaque("function")
            return self.on_callable(handle, name)
        if "__context__" in data:
            handle, name = data["__context__"], data.get("name", "context manager")
            if type(handle) is not int or type(name) is not str:
                raise DecodeError("bad context manager")
            if self.on_context is None:
                return Opaque(name[:300])
            return self.on_context(handle, name[:300])
        if "__opaque__" in data:
            return Opaque(str(data["__opaque__"])[:300])
        raise DecodeError(f"unknown record item {sorted(data)[:3]}")

    def _tensor(self, spec: Any):
        import torch

        if type(spec) is not dict:
            raise DecodeError("bad tensor")
        dtype, shape, offset, nbytes = (spec.get(k) for k in ("dtype", "shape", "offset", "nbytes"))
        if (
            dtype not in _DTYPES
            or type(shape) is not list
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise DecodeError("bad tensor header")
        if (
            type(offset) is not int
            or type(nbytes) is not int
            or offset < 0
            or nbytes < 0
            or offset + nbytes > len(self.blob)
        ):
            raise DecodeError("tensor bytes out of range")
        torch_dtype = getattr(torch, dtype)
        numel = math.prod(shape)
        if numel * torch.empty((), dtype=torch_dtype).element_size() != nbytes:
            raise DecodeError("tensor size does not match its shape")
        if self.on_tensor is not None:
            self.on_tensor(nbytes)
        if numel == 0:
            return torch.empty(shape, dtype=torch_dtype)
        raw = torch.frombuffer(bytearray(self.blob[offset : offset + nbytes]), dtype=torch.uint8)
        return raw.view(torch_dtype).reshape(shape).clone()
