"""The isolated kernel (course_utils.grading.sandbox, kernel): an allow-list file system, a memory
cap for the whole process tree, its own stdout/stderr, and a kill that reaches exactly its
processes. Needs root on Linux (skipped otherwise); starts one small kernel, no model."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from course_utils.exercises import ROOT, SOLUTIONS
from course_utils.grading.batch import (
    UidPool,
    _kernel_env,
    allowed_paths,
    make_scratch,
    processes_of,
)
from course_utils.grading.judge import read_record
from course_utils.grading.kernel import KernelSession, MemoryCgroup
from course_utils.grading.sandbox import can_isolate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not can_isolate(), reason="isolation needs root on Linux"),
]

PROBE = r"""
import json, os
seen = {}
for path in PATHS:
    try:
        seen[path] = sorted(os.listdir(path)) if os.path.isdir(path) else open(path).read(100)
    except Exception as error:
        seen[path] = type(error).__name__
import course_utils
seen["course_utils"] = course_utils.__file__
seen["uid"] = os.getuid()
json.dump(seen, open(os.path.expanduser("~/probe.json"), "w"))
"""

TREE = r"""
import os, time
children = []
for _ in range(3):  # three processes of 600 MiB each: 1.8 GiB together, over the 1.25 GiB cap
    pid = os.fork()
    if pid == 0:
        try:
            block = bytearray(600 << 20)
            for i in range(0, len(block), 4096):
                block[i] = 1
            time.sleep(3)
        finally:
            os._exit(0)
    children.append(pid)
statuses = [os.waitpid(pid, 0)[1] for pid in children]
open(os.path.expanduser("~/tree.txt"), "w").write(" ".join(map(str, statuses)))
"""


@pytest.fixture()
def kernel(tmp_path):
    temp_root = tempfile.mkdtemp(prefix="rsl-grading-test-", dir=tempfile.gettempdir())
    os.chmod(temp_root, 0o711)
    scratch = tempfile.mkdtemp(dir=temp_root)
    pool = UidPool()
    uid, lock = pool.acquire()
    records, records_fd = make_scratch(scratch, uid)
    memory = int(1.25 * (1 << 30))
    cgroup = MemoryCgroup.create(f"rsl-grading-test-{os.getpid()}", memory)
    config = {
        "memory_bytes": 4 << 30,
        "file_bytes": 64 << 20,
        "processes": 512,
        "uid": uid,
        "network": False,
        "allow": allowed_paths(str(tmp_path / "model-cache")),
        "cgroup_object": cgroup,
    }
    session = KernelSession(scratch, _kernel_env(scratch, str(tmp_path / "model-cache")), config)
    session.start(120)
    yield session, scratch, uid, cgroup, records, records_fd
    session.shutdown()
    os.close(records_fd)
    if cgroup is not None:
        cgroup.remove()
    pool.release(lock)
    shutil.rmtree(temp_root, ignore_errors=True)


def test_isolated_kernel(kernel, tmp_path, capfd):
    session, scratch, uid, cgroup, records, records_fd = kernel
    other = tmp_path / "other-clone"
    (other / "solutions").mkdir(parents=True)
    shutil.copy(SOLUTIONS / "00_first_look.ipynb", other / "solutions")
    paths = [
        str(SOLUTIONS),
        str(ROOT / "tests"),
        str(ROOT / ".git"),
        str(ROOT),
        str(other),
        "/root",
        "/home",
        "/work",
        "/etc/shadow",
    ]
    assert session.run(f"PATHS = {paths!r}\n{PROBE}", 60).status == "ok"
    seen = json.load(open(os.path.join(scratch, "probe.json")))
    assert seen["uid"] == uid
    assert seen["course_utils"] == str(ROOT / "course_utils" / "__init__.py")
    # the checkout shows the package alone (an allow-list), and the virtual environment where it
    # lies inside the checkout (as `make setup`'s .venv does): the kernel needs Python
    venv = Path(sys.prefix).resolve()
    inside = [venv.relative_to(ROOT).parts[0]] if venv.is_relative_to(ROOT) else []
    assert seen[str(ROOT)] == sorted(["course_utils", *inside])
    for hidden in (str(SOLUTIONS), str(ROOT / "tests"), str(ROOT / ".git"), str(other)):
        assert seen[hidden] == "FileNotFoundError", (hidden, seen[hidden])
    assert seen["/etc/shadow"] in ("PermissionError", "FileNotFoundError")

    # the kernel's raw writes to fd 1 and 2 go to its own log, not to the grader's descriptors
    assert (
        session.run(
            "import os\nfor fd in (1, 2):\n    os.write(fd, b'RSL-SANDBOX-FD-MARKER\\n')", 30
        ).status
        == "ok"
    )
    captured = capfd.readouterr()
    assert "RSL-SANDBOX-FD-MARKER" not in captured.out + captured.err
    assert "RSL-SANDBOX-FD-MARKER" in open(os.path.join(scratch, "kernel.log")).read()

    # a kernel that deletes or renames its home keeps its records (and cannot list or empty the
    # folder)
    attack = (
        "import os, shutil\nfrom course_utils.grading.capture import Recorder\n"
        f"recorder = Recorder({records!r})\n"
        "shutil.rmtree(os.path.expanduser('~'), ignore_errors=True)\n"
        f"os.rename({records!r}, {records!r} + '.moved') if os.path.exists({records!r}) else None\n"
        "answer = 42\nrecorder.begin('cell', ['answer'], globals())\nrecorder.end()"
    )
    assert session.run(attack, 60).status == "ok"
    record, _ = read_record(records_fd, "cell")
    assert record["names"]["answer"] == {"value": 42}

    if cgroup is None:
        pytest.skip(
            "no memory cgroup could be made on this machine: only the per-process cap holds"
        )
    run = session.run(TREE, 60)
    usage_file = "memory.max_usage_in_bytes" if cgroup.level == "cgroup v1" else "memory.peak"
    peak = (
        int(open(os.path.join(cgroup.path, usage_file)).read())
        if os.path.exists(os.path.join(cgroup.path, usage_file))
        else 0
    )
    assert peak <= int(1.25 * (1 << 30)) + (1 << 20), "the process tree went over the cap"
    if run.status == "ok":  # the kernel survived: at least one child was killed by the cap
        statuses = [int(s) for s in open(os.path.join(scratch, "tree.txt")).read().split()]
        assert any(os.WIFSIGNALED(s) and os.WTERMSIG(s) == 9 for s in statuses), statuses

    # killing the kernel reaches every process it started, and nothing else
    session.run("import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True)", 30)
    session.shutdown()
    assert cgroup.pids() == [] and processes_of(uid) == []
