"""Kernel launcher for grading: limits, then (as root on Linux) isolation, then ``exec`` the kernel.

Run as ``python -m course_utils.grading.sandbox CONFIG_JSON CONNECTION_FILE``; the grader's kernel
manager uses it instead of the plain ``ipykernel_launcher`` command. In order:

1. resource limits: address space (``RLIMIT_AS``, the memory cap), file size, core dumps, processes;
2. when running as root on Linux: a private mount namespace in which the trusted files (solutions,
   tests, git history, the submissions and results folders) are covered by an empty read-only tmpfs,
   a private network namespace (no network; the kernel talks to the grader over Unix sockets), then
   ``no_new_privs`` and a switch to an unprivileged uid of its own, so the kernel cannot write the
   course files, read the hidden files, signal the grader or touch another submission's folder;
3. ``exec`` of ``ipykernel_launcher`` with a copy of the connection file it can read.

Without root only step 1 and 3 happen; the grader reports the isolation level it got.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import sys

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 4096, 8192, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38


def can_isolate() -> bool:
    return sys.platform.startswith("linux") and os.geteuid() == 0


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def set_limits(memory_bytes: int, file_bytes: int, processes: int) -> None:
    for limit, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_FSIZE, file_bytes),
                         (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, processes)):
        if value is not None:
            resource.setrlimit(limit, (value, value))


def _closed_ancestor(path: str) -> tuple[str, str] | None:
    """(the highest folder above ``path`` that others may not enter, its child on the way) or None."""
    parts = os.path.realpath(path).split(os.sep)[1:]
    for depth in range(1, len(parts)):
        folder = os.sep + os.path.join(*parts[:depth])
        if not os.stat(folder).st_mode & 0o001:
            return folder, parts[depth]
    return None


def isolate(hide: list[str], uid: int, network: bool, expose: list[str], staging: str) -> None:
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS | (0 if network else CLONE_NEWNET)), "unshare")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
    # folders the kernel needs (python, the venv, the course) may sit below a private folder such as
    # /root (mode 700): cover that folder with an empty tmpfs and move back only the needed child
    reopen = []
    for needed in expose:
        found = _closed_ancestor(needed)
        if found and found not in reopen:
            reopen.append(found)
    for number, (folder, child) in enumerate(reopen):
        stage = os.path.join(staging, f"stage{number}")
        os.makedirs(stage, exist_ok=True)
        _check(libc.mount(os.path.join(folder, child).encode(), stage.encode(), None, MS_BIND | MS_REC, None),
               f"stage {folder}/{child}")
    covered = set()
    for number, (folder, child) in enumerate(reopen):
        if folder not in covered:
            _check(libc.mount(b"tmpfs", folder.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64k,mode=0755"),
                   f"cover {folder}")
            covered.add(folder)
        os.makedirs(os.path.join(folder, child), exist_ok=True)
        _check(libc.mount(os.path.join(staging, f"stage{number}").encode(), os.path.join(folder, child).encode(),
                          None, MS_MOVE, None), f"expose {folder}/{child}")
    for path in hide:
        if os.path.isdir(path):
            _check(libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                              b"size=4k,mode=0555"), f"hide {path}")
        elif os.path.exists(path):
            _check(libc.mount(b"/dev/null", path.encode(), None, MS_BIND, None), f"hide {path}")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def main(argv: list[str]) -> None:
    config = json.loads(argv[0])
    connection_file = argv[1]
    scratch = config["scratch"]
    uid = config.get("uid")
    copy = os.path.join(scratch, "connection.json")
    shutil.copyfile(connection_file, copy)
    if uid is not None:
        os.chown(copy, uid, uid)
    os.chmod(copy, 0o600)
    if uid is not None:
        isolate(config["hide"], uid, config.get("network", False),
                [sys.base_prefix, sys.prefix, sys.executable, *config.get("expose", [])], scratch)
    # limits last: the steps above must not count against the kernel's own budget
    set_limits(config["memory_bytes"], config["file_bytes"], config["processes"] if uid is not None else None)
    os.chdir(scratch)
    python = sys.executable
    os.execv(python, [python, "-m", "ipykernel_launcher", "-f", copy])


if __name__ == "__main__":
    main(sys.argv[1:])
