"""Kernel launcher for grading: cgroup, isolation, limits, then ``exec`` the kernel.

Run as ``python -m course_utils.grading.sandbox CONFIG_JSON CONNECTION_FILE``; the grader's kernel
manager uses it instead of the plain ``ipykernel_launcher`` command. In order:

1. the memory cgroup the grader made for this kernel (``config["cgroup"]``): joined first, so the
   cap holds for the kernel and every process it starts, together;
2. when running as root on Linux: a private mount namespace whose root is an empty tmpfs holding
   only an allow-list, bound read-only (the system's programs and libraries, Python, the virtual
   environment, the course package ``course_utils`` alone, the model cache) and the submission's own
   scratch folder, read-write; nothing else on the machine (the solutions, tests, git history,
   another clone of the course, home folders, the submissions and results) exists in it. Then a
   private network namespace (no network; the kernel talks to the grader over Unix sockets),
   ``chroot``, ``no_new_privs`` and a switch to an unprivileged uid reserved for this kernel;
3. resource limits: address space (``RLIMIT_AS``), file size, core dumps, processes;
4. ``exec`` of ``ipykernel_launcher`` with a copy of the connection file it can read.

Without root only steps 3 and 4 happen; the grader reports the isolation level it got.
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
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38

# system folders every program needs (read-only); their contents are the distribution's, not the
# course's
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
DEVICES = ("null", "zero", "full", "random", "urandom")


def can_isolate() -> bool:
    return sys.platform.startswith("linux") and os.geteuid() == 0


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def set_limits(memory_bytes: int, file_bytes: int, processes: int | None) -> None:
    for limit, value in (
        (resource.RLIMIT_AS, memory_bytes),
        (resource.RLIMIT_FSIZE, file_bytes),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, processes),
    ):
        if value is not None:
            resource.setrlimit(limit, (value, value))


def join_cgroup(folder: str) -> None:
    """Move this process (and so everything it starts) into the cgroup ``folder``."""
    with open(os.path.join(folder, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))


def _bind(libc, source: str, target: str, writable: bool = False, recursive: bool = True) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    flags = MS_BIND | (MS_REC if recursive else 0)
    _check(libc.mount(source.encode(), target.encode(), None, flags, None), f"bind {source}")
    if not writable:
        _check(
            libc.mount(
                b"none", target.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID, None
            ),
            f"read-only {source}",
        )


def _allowed(paths: list[str]) -> list[str]:
    """Existing paths, resolved, without duplicates or paths inside another one of the list."""
    real = sorted({os.path.realpath(p) for p in paths if p and os.path.exists(p)})
    return [p for p in real if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in real)]


def isolate(allow: list[str], scratch: str, uid: int, network: bool) -> None:
    """Allow-list root, namespaces, chroot and uid switch (see the module docstring, step 2)."""
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS | (0 if network else CLONE_NEWNET)), "unshare")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
    root = os.path.join(scratch, ".root")
    os.makedirs(root, exist_ok=True)
    _check(
        libc.mount(b"tmpfs", root.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0755"),
        "new root",
    )
    for path in SYSTEM_PATHS:
        if os.path.islink(path):  # /bin -> usr/bin on merged-/usr systems
            os.symlink(os.readlink(path), root + path)
    # tmpfs folders first: the allowed paths and the scratch folder may lie below /tmp
    os.makedirs(root + "/dev", exist_ok=True)
    _check(
        libc.mount(b"tmpfs", (root + "/dev").encode(), b"tmpfs", MS_NOSUID, b"size=64k,mode=0755"),
        "/dev",
    )
    for sub, size in (("/dev/shm", b"size=256m,mode=1777"), ("/tmp", b"size=256m,mode=1777")):
        os.makedirs(root + sub, exist_ok=True)
        _check(
            libc.mount(b"tmpfs", (root + sub).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, size), sub
        )
    for device in DEVICES:
        _bind(libc, f"/dev/{device}", f"{root}/dev/{device}", writable=True, recursive=False)
    scratch_real = os.path.realpath(scratch)
    for path in _allowed([p for p in SYSTEM_PATHS if not os.path.islink(p)] + list(allow)):
        if scratch_real.startswith(path.rstrip("/") + "/"):
            continue  # never expose a folder holding the scratch folder (the grader's temp root...)
        _bind(libc, path, root + path)
    _bind(libc, scratch_real, root + scratch_real, writable=True, recursive=False)
    os.makedirs(root + "/proc", exist_ok=True)
    _check(libc.mount(b"/proc", (root + "/proc").encode(), None, MS_BIND | MS_REC, None), "/proc")
    _check(
        libc.mount(
            b"none", root.encode(), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None
        ),
        "read-only root",
    )
    os.chroot(root)
    os.chdir("/")
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
    if config.get("cgroup"):
        join_cgroup(config["cgroup"])
    if uid is not None:
        isolate(
            [sys.base_prefix, sys.prefix, *config.get("allow", [])],
            scratch,
            uid,
            config.get("network", False),
        )
    # limits last: the steps above must not count against the kernel's own budget
    set_limits(
        config["memory_bytes"],
        config["file_bytes"],
        config["processes"] if uid is not None else None,
    )
    os.chdir(scratch)
    python = sys.executable
    os.execv(python, [python, "-m", "ipykernel_launcher", "-f", copy])


if __name__ == "__main__":
    main(sys.argv[1:])
