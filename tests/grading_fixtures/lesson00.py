"""Honest and hostile submissions of lesson 00, built from the student notebook by code.

``write_submissions(folder)`` writes them and returns ``{file name: expected CSV row}`` where a row
is ``{grade_id: points, "total": points, "error": substring expected in the error column}``.
Each hostile notebook attacks one thing; its docstring-like first comment says what.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nbformat

from course_utils.authoring.exercise_format import nbgrader_metadata

ROOT = Path(__file__).resolve().parents[2]
STUDENT = ROOT / "notebooks" / "00_first_look.ipynb"
EX1, EX2 = "ex00_next_token_probs", "ex00_top_k"
CHECK1, CHECK2 = "check00_next_token_probs", "check00_top_k"

GOOD_PROBS = """def next_token_probs(model, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        logits = model(model.to_tokens(prompt))
    return logits[0, -1].softmax(dim=-1)"""

GOOD_TOP_K = """def top_k(model, prompt: str, k: int = 5) -> list[tuple[str, float]]:
    values, indices = next_token_probs(model, prompt).topk(k)
    return [(model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, indices)]"""

WRONG_TOP_K = """def top_k(model, prompt: str, k: int = 5) -> list[tuple[str, float]]:
    # partially correct student: forgets that decode needs the id on its own, returns ids instead
    values, indices = next_token_probs(model, prompt).topk(k)
    return [(str(int(i)), float(v)) for v, i in zip(values, indices)]"""

FAKE_PASS = """# hostile: prints the success lines, replaces its copy of the check cell, forges check results
def next_token_probs(model, prompt):
    print("✅ 00.1 next_token_probs: matches the model's own softmax on 2 prompts")
    return torch.zeros(model.cfg.d_vocab)

import course_utils.checks as _checks_pkg
_checks_pkg.RESULTS.append(_checks_pkg.CheckResult("00.1 next_token_probs", True, "passed"))
print("✅ passed")"""

REDEFINE_CHECKS = """# hostile: redefines the check functions and the check framework in the kernel
import course_utils.checks as _checks_pkg
from course_utils.checks import first_look as _first_look

def _always_pass(*args, **kwargs):
    print("✅ passed")

for _module in (checks, _first_look):
    _module.check_next_token_probs = _always_pass
    _module.check_top_k = _always_pass
_checks_pkg.run_check = lambda exercise, body, hidden=False: print("✅", exercise)
_checks_pkg.compare_tensors = lambda *args, **kwargs: 0.0
_checks_pkg.expect = lambda *args, **kwargs: None
torch.testing.assert_close = lambda *args, **kwargs: None

def top_k(model, prompt, k=5):
    return [("?", 0.0)] * k"""

ALWAYS_EQUAL = """# hostile: objects that compare equal to anything
class AlwaysEqual(torch.Tensor):
    def __eq__(self, other): return True
    def __ne__(self, other): return False

class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __len__(self): return 5
    def __iter__(self): return iter([("x", 1.0)] * 5)
    def __getitem__(self, i): return ("x", 1.0)
    def __float__(self): return 1.0

def next_token_probs(model, prompt):
    return torch.zeros(model.cfg.d_vocab).as_subclass(AlwaysEqual)

def top_k(model, prompt, k=5):
    return Anything()"""

READ_KEYS = """# hostile: looks for the solution notebook (answer keys, hidden tests) on disk and runs its code
import json as _json, pathlib as _pathlib, re as _re, subprocess as _subprocess
import course_utils as _cu
_root = _pathlib.Path(_cu.__file__).resolve().parent.parent
_source = ""
for _candidate in [_root / "solutions" / "00_first_look.ipynb", *_root.glob("*/*00_first_look*.ipynb")]:
    try:
        _cells = _json.loads(_candidate.read_text())["cells"]
    except Exception:
        continue
    _text = "\\n".join("".join(c["source"]) for c in _cells)
    if "### BEGIN SOLUTION" in _text:
        _source = _text
        break
if not _source:
    try:
        _source = _subprocess.run(["git", "-C", str(_root), "show", "HEAD:solutions/00_first_look.ipynb"],
                                  capture_output=True, text=True, timeout=20).stdout
        _source = "\\n".join("".join(c["source"]) for c in _json.loads(_source)["cells"])
    except Exception:
        _source = ""
for _block in _re.findall(r"(def (?:next_token_probs|top_k)\\(.*?### END SOLUTION)", _source, _re.S):
    exec(_block)
print("found the keys" if _source else "no keys found")
if "next_token_probs" not in globals():
    def next_token_probs(model, prompt):
        raise NotImplementedError()
if "top_k" not in globals():
    def top_k(model, prompt, k=5):
        raise NotImplementedError()"""

INFINITE_LOOP = """# hostile: an infinite loop inside the function (interruptible); top_k does not depend on it
def next_token_probs(model, prompt):
    while True:
        pass"""

REFERENCE_TOP_K = """def top_k(model, prompt, k=5):
    from course_utils.predictions import top_k as reference_top_k
    return reference_top_k(model, prompt, k)"""

UNKILLABLE = """# hostile: ignores the interrupt and loops forever at the top level of the cell
import signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
while True:
    pass"""

CRASH = """# hostile: the kernel process kills itself
import os, signal
os.kill(os.getpid(), signal.SIGKILL)"""

MEMORY_BOMB = """# hostile: allocates until the memory cap stops it
def top_k(model, prompt, k=5):
    blocks = []
    while True:
        blocks.append(bytearray(256 << 20))"""

DELETE_FILES = (
    """# hostile: tries to delete the course, the solutions, the submissions and the grader's folders
import os, pathlib, shutil
import course_utils as _cu
_root = pathlib.Path(_cu.__file__).resolve().parent.parent
_attempts = []
for _target in [_root / "solutions", _root / "course_utils" / "checks", _root / "tests",
                pathlib.Path(os.getcwd()).parent, pathlib.Path("/tmp")]:
    try:
        shutil.rmtree(_target)
        _attempts.append(f"deleted {_target}")
    except Exception as error:
        _attempts.append(f"{_target}: {type(error).__name__}")
for _path in _root.rglob("*.ipynb"):
    try:
        _path.unlink()
    except Exception:
        pass
print(_attempts)"""
    + "\n\n"
    + GOOD_PROBS
)

BIG_OUTPUT = (
    """# hostile: prints about 40 MB
for _ in range(40):
    print("x" * 1_000_000)"""
    + "\n\n"
    + GOOD_PROBS
)


HELPER_TOP_K = """def top_k(model, prompt: str, k: int = 5) -> list[tuple[str, float]]:
    values, indices = next_token_probs(model, prompt).topk(k)
    return [(_decode_one(model, i), float(v)) for v, i in zip(values, indices)]"""

NUMPY_AND_CLASS = """# honest: a callable object instead of a function, numpy probabilities (the checks accept both)
import numpy as np

class NextTokenProbs:
    def __call__(self, model, prompt):
        with torch.no_grad():
            logits = model(model.to_tokens(prompt))
        return logits[0, -1].softmax(dim=-1)

next_token_probs = NextTokenProbs()"""

NUMPY_TOP_K = """def top_k(model, prompt, k=5):
    values, indices = next_token_probs(model, prompt).topk(k)
    return [(model.tokenizer.decode([int(i)]), np.float32(v.item())) for v, i in zip(values, indices)]"""

# hostile: after check 1 has written its record, the exercise cell of 00.2 replaces that record
TAMPER_RECORD = (
    """# hostile: replaces the record of the first check by {what}
import os as _os, glob as _glob
for _path in _glob.glob(_os.path.expanduser("~/records/check00_next_token_probs.json")):
    _os.unlink(_path)
    {action}
"""
    + "\n"
    + GOOD_TOP_K
)
SYMLINK_RECORD = TAMPER_RECORD.replace("{what}", "a link to a file of the grader's").replace(
    "{action}", '_os.symlink("/etc/hostname", _path)'
)
FIFO_RECORD = TAMPER_RECORD.replace("{what}", "a FIFO (a reader blocks forever)").replace(
    "{action}", "_os.mkfifo(_path)"
)
CALLBACK_FLOOD = (
    """# hostile: adds a flood of callbacks, each carrying a large tensor, to the first check's record
import os as _os, json as _json
_path = _os.path.expanduser("~/records/check00_next_token_probs.json")
if _os.path.exists(_path):
    _record = _json.load(open(_path))
    for _call in _record["calls"]:
        _call["callbacks"] = [{"arg": 0, "args": {"__list__": [_call.get("result")]}}] * 20000
    open(_path + ".tmp", "w").write(_json.dumps(_record))
    _os.replace(_path + ".tmp", _path)
"""
    + "\n"
    + GOOD_TOP_K
)

RAW_FD_WRITE = (
    """# hostile: writes straight to file descriptors 1 and 2 (the grader's, if the kernel inherited them)
import os as _os
for _fd in (1, 2):
    _os.write(_fd, b"RSL-RAW-FD-MARKER " * 1000)"""
    + "\n\n"
    + GOOD_PROBS
)

FIND_OTHER_COPY = r"""# hostile: searches the whole file system for any copy of the solution notebook and runs its code
import os as _os, re as _re, json as _json, time as _time
_start, _source = _time.monotonic(), ""
for _dir, _subdirs, _files in _os.walk("/"):
    _subdirs[:] = [d for d in _subdirs if not (_dir == "/" and d in ("proc", "sys", "dev"))]
    if _time.monotonic() - _start > 20 or _source:
        break
    for _name in _files:
        if _name.endswith("00_first_look.ipynb"):
            try:
                _cells = _json.load(open(_os.path.join(_dir, _name)))["cells"]
                _text = "\n".join("".join(c["source"]) for c in _cells)
            except Exception:
                continue
            if "### BEGIN SOLUTION" in _text:
                _source = _text
for _block in _re.findall(r"(def (?:next_token_probs|top_k)\(.*?### END SOLUTION)", _source, _re.S):
    exec(_block)
print("found a copy" if _source else "no copy found")
if "next_token_probs" not in globals():
    def next_token_probs(model, prompt):
        raise NotImplementedError()"""


def _insert_after(nb, grade_id: str, *sources: str, before: bool = False) -> None:
    """Insert new code cells (no nbgrader metadata: the student's own) next to a graded cell."""
    index = next(
        i
        for i, c in enumerate(nb.cells)
        if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id
    )
    at = index if before else index + 1
    nb.cells[at:at] = [nbformat.v4.new_code_cell(source) for source in sources]


def scratch_and_helpers():
    """honest: keeps a scratch copy of the exercise above it, leaves the stub in the exercise cell
    and writes the answer in a new cell below it, and puts a helper in a cell of its own."""
    nb = _lean(nbformat.read(STUDENT, as_version=4))
    stub_source = next(
        c.source
        for c in nb.cells
        if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == EX1
    )
    _insert_after(nb, EX1, "# my scratch copy\n" + stub_source, before=True)
    _insert_after(nb, EX1, GOOD_PROBS)
    _set_exercise(nb, EX2, HELPER_TOP_K)
    _insert_after(
        nb,
        EX2,
        "def _decode_one(model, i):\n    return model.tokenizer.decode([int(i)])",
        before=True,
    )
    return nb


def _set_exercise(nb, grade_id: str, source: str) -> None:
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source
            return
    raise KeyError(grade_id)


def _replace_check(nb, grade_id: str, source: str) -> None:
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source


def _lean(nb):
    """Keep only the setup cell, the cell loading the model and the exercise/check cells: a student
    may delete the rest, and it keeps the hostile set quick to grade."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    keep = {id(code[0])} | {
        id(c) for c in code if "load_model(" in c.source or c.get("metadata", {}).get("nbgrader")
    }
    nb.cells = [c for c in nb.cells if id(c) in keep]
    return nb


def _notebook(
    ex1: str, ex2: str, drop_check: str | None = None, fake_checks: bool = False, lean: bool = True
):
    nb = copy.deepcopy(nbformat.read(STUDENT, as_version=4))
    if lean:
        nb = _lean(nb)
    _set_exercise(nb, EX1, ex1)
    _set_exercise(nb, EX2, ex2)
    if fake_checks:
        _replace_check(nb, CHECK1, 'print("✅ 00.1 next_token_probs: passed")')
        _replace_check(nb, CHECK2, 'print("✅ 00.2 top_k: passed")')
    if drop_check:
        dropped = {CHECK1, CHECK2} if drop_check == "all" else {drop_check}
        nb.cells = [
            c
            for c in nb.cells
            if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") not in dropped
        ]
    return nb


def kernel_submissions(include_destructive: bool) -> dict[str, tuple]:
    """name -> (notebook, expected points of check 1, of check 2, expected error substring)."""
    stub = nbformat.read(STUDENT, as_version=4)
    cases = {
        "honest_correct.ipynb": (
            _notebook(GOOD_PROBS, GOOD_TOP_K, drop_check=CHECK2, lean=False),
            1,
            1,
            "",
        ),
        "honest_partial.ipynb": (_notebook(GOOD_PROBS, WRONG_TOP_K, lean=False), 1, 0, ""),
        "honest_stub.ipynb": (stub, 0, 0, ""),
        "fake_pass.ipynb": (
            _notebook(
                FAKE_PASS,
                'def top_k(model, prompt, k=5):\n    print("✅ passed")\n    return []',
                fake_checks=True,
            ),
            0,
            0,
            "",
        ),
        "redefine_checks.ipynb": (
            _notebook(
                "def next_token_probs(model, prompt):\n    return torch.ones(model.cfg.d_vocab)",
                REDEFINE_CHECKS,
            ),
            0,
            0,
            "",
        ),
        "always_equal.ipynb": (
            _notebook(ALWAYS_EQUAL, "# top_k is defined in the cell above"),
            0,
            0,
            "",
        ),
        "read_answer_keys.ipynb": (_notebook(READ_KEYS, "# defined above"), 0, 0, ""),
        "infinite_loop.ipynb": (_notebook(INFINITE_LOOP, REFERENCE_TOP_K), 0, 1, ""),
        "unkillable_loop.ipynb": (_notebook(GOOD_PROBS, UNKILLABLE), 1, 0, "kernel killed"),
        "crash.ipynb": (_notebook(GOOD_PROBS, CRASH), 1, 0, "kernel died"),
        "memory_bomb.ipynb": (_notebook(GOOD_PROBS, MEMORY_BOMB), 1, 0, ""),
        "big_output.ipynb": (_notebook(BIG_OUTPUT, GOOD_TOP_K), 1, 1, ""),
    }
    cases.update(
        {
            "honest_scratch_and_helpers.ipynb": (scratch_and_helpers(), 1, 1, ""),
            "honest_numpy_and_callable_object.ipynb": (
                _notebook(NUMPY_AND_CLASS, NUMPY_TOP_K),
                1,
                1,
                "",
            ),
            "honest_no_check_cells.ipynb": (
                _notebook(GOOD_PROBS, GOOD_TOP_K, drop_check="all"),
                1,
                1,
                "",
            ),
            "=HYPERLINK(formula).ipynb": (_notebook(GOOD_PROBS, GOOD_TOP_K), 1, 1, ""),
            "record_symlink.ipynb": (_notebook(GOOD_PROBS, SYMLINK_RECORD), 0, 1, ""),
            "record_fifo.ipynb": (_notebook(GOOD_PROBS, FIFO_RECORD), 0, 1, ""),
            "record_callback_flood.ipynb": (_notebook(GOOD_PROBS, CALLBACK_FLOOD), 0, 1, ""),
            "raw_fd_write.ipynb": (_notebook(RAW_FD_WRITE, GOOD_TOP_K), 1, 1, ""),
        }
    )
    if include_destructive:
        cases["delete_files.ipynb"] = (_notebook(DELETE_FILES, GOOD_TOP_K), 1, 1, "")
        # top_k uses next_token_probs: both score only if a copy of the answers was found
        cases["find_other_copy.ipynb"] = (_notebook(FIND_OTHER_COPY, GOOD_TOP_K), 0, 0, "")
    return cases


def invalid_files() -> dict[str, tuple[bytes, str]]:
    """name -> (file content, substring expected in the error column)."""
    other = nbformat.v4.new_notebook()
    other.cells = [
        nbformat.v4.new_code_cell(
            "def embed(model, tokens):\n    raise NotImplementedError()",
            metadata=nbgrader_metadata("ex01_embed", solution=True),
        )
    ]
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": []}]}
    return {
        "empty.ipynb": (b"", "empty file"),
        "caf\udce9 (latin-1 name).ipynb": (b"", "empty file"),  # on disk b"caf\xe9": not UTF-8
        "+cmd|calc.ipynb": (b"{", "malformed JSON"),
        "malformed.ipynb": (b'{"cells": [ {"cell_type": "code", ', "malformed JSON"),
        "nbformat3.ipynb": (json.dumps(v3).encode(), "nbformat=3"),
        "other_lesson.ipynb": (nbformat.writes(other).encode(), "wrong lesson"),
        "notes.txt": (b"my answers are in the other file\n", "malformed JSON"),
        "no_metadata.ipynb": (
            nbformat.writes(
                nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1+1")])
            ).encode(),
            "no exercise cells",
        ),
    }


def write_submissions(folder: Path, include_destructive: bool) -> dict[str, dict]:
    """Write every submission into ``folder``; return the expected result of each."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (nb, p1, p2, error) in kernel_submissions(include_destructive).items():
        (folder / name).write_text(nbformat.writes(nb))
        expected[name] = {CHECK1: p1, CHECK2: p2, "total": p1 + p2, "error": error}
    for name, (data, error) in invalid_files().items():
        (folder / name).write_bytes(data)
        expected[name] = {CHECK1: 0, CHECK2: 0, "total": 0, "error": error}
    return expected
