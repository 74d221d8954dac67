"""One submission's kernel: started through ``sandbox``, fed one cell at a time, each with a
timeout.

A cell that runs past its timeout is interrupted (``KeyboardInterrupt``); a kernel that does not
come back within a grace period, dies (memory cap, crash, ``os._exit``) or exceeds the submission's
total budget is killed, together with every process of its cgroup and of its uid (both reserved
for this kernel alone, see ``MemoryCgroup`` and ``batch.UidPool``), and reported as dead. The kernel
writes its stdout and stderr to a capped file of its own, never to the grader's descriptors.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from dataclasses import dataclass

from jupyter_client import KernelManager

INTERRUPT_GRACE_S = 5.0


@dataclass
class CellRun:
    status: str  # "ok", "error", "timeout" (interrupted, kernel alive), "dead"
    error: str = ""
    output_chars: int = 0
    seconds: float = 0.0


class _LaunchThroughSandbox(KernelManager):
    """A kernel manager whose kernel command is ``python -m course_utils.grading.sandbox ...``."""

    sandbox_config: dict = {}

    def format_kernel_cmd(self, extra_arguments=None):
        return [
            sys.executable,
            "-m",
            "course_utils.grading.sandbox",
            json.dumps(self.sandbox_config),
            self.connection_file,
        ]


class KernelSession:
    def __init__(self, scratch: str, env: dict, sandbox_config: dict, output_limit: int = 1 << 20):
        self.scratch = scratch
        self.uid = sandbox_config.get("uid")
        self.cgroup: MemoryCgroup | None = sandbox_config.pop("cgroup_object", None)
        if self.cgroup is not None:
            sandbox_config = dict(sandbox_config, cgroup=self.cgroup.path)
        ipc = (
            self.uid is not None
        )  # isolated kernels have no network, so they talk over Unix sockets
        self.km = _LaunchThroughSandbox(
            kernel_name="python3",
            transport="ipc" if ipc else "tcp",
            ip=os.path.join(scratch, "zmq") if ipc else "127.0.0.1",
        )
        self.km.sandbox_config = dict(sandbox_config, scratch=scratch)
        self.env = env
        self.kc = None
        self.output_limit = output_limit
        self.output_chars = 0
        self.dead = False

    def start(self, timeout: float) -> None:
        # the kernel's own stdout/stderr: a file in its scratch folder (capped by RLIMIT_FSIZE), so
        # a raw os.write(1, ...) never reaches the grader's terminal or log
        log = os.open(
            os.path.join(self.scratch, "kernel.log"),
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        try:
            if self.uid is not None:
                os.fchown(log, self.uid, self.uid)
            self.km.start_kernel(
                env=self.env, cwd=self.scratch, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        finally:
            os.close(log)
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=timeout)
        except RuntimeError as error:
            self.kill()
            raise RuntimeError(f"the kernel did not start: {error}") from None

    def run(self, code: str, timeout: float) -> CellRun:
        if self.dead:
            return CellRun("dead", "kernel is not running")
        start = time.monotonic()
        msg_id = self.kc.execute(code, store_history=False, allow_stdin=False, stop_on_error=False)
        deadline = start + timeout
        status, error, chars = "ok", "", 0
        interrupted_at = None
        while True:
            now = time.monotonic()
            if interrupted_at is None and now >= deadline:
                interrupted_at = now
                status = "timeout"
                try:
                    self.km.interrupt_kernel()
                except Exception:  # a kernel that is already gone is handled below
                    pass
            if interrupted_at is not None and now - interrupted_at > INTERRUPT_GRACE_S:
                self.kill()
                return CellRun(
                    "dead",
                    f"did not stop within {INTERRUPT_GRACE_S:.0f} s of an interrupt after "
                    f"its {timeout:.0f} s timeout; kernel killed",
                    chars,
                    now - start,
                )
            try:
                msg = self.kc.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                if not self.km.is_alive():
                    self.kill()
                    return CellRun(
                        "dead", "the kernel died (memory cap, crash or exit)", chars, now - start
                    )
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                chars += len(content.get("text", ""))
            elif kind in ("display_data", "execute_result"):
                chars += sum(len(str(v)) for v in content.get("data", {}).values())
            elif kind == "error" and status != "timeout":
                status = "error"
                error = f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"[:1000]
            elif kind == "status" and content.get("execution_state") == "idle":
                break
        self.output_chars += chars
        if status == "timeout":
            error = f"timed out after {timeout:.0f} s (interrupted)"
        return CellRun(status, error, chars, time.monotonic() - start)

    def kill(self) -> None:
        self.dead = True
        try:
            if self.kc is not None:
                self.kc.stop_channels()
        finally:
            try:
                if self.km.has_kernel:
                    self.km.shutdown_kernel(now=True)
            except Exception:  # already gone
                pass
            if self.cgroup is not None:
                self.cgroup.kill()
            kill_uid(self.uid)

    def shutdown(self) -> None:
        if not self.dead:
            self.kill()


def kill_uid(uid: int | None) -> None:
    """SIGKILL every process of ``uid`` (grandchildren a kernel started and detached included)."""
    if uid is None or os.geteuid() != 0 or uid == 0:
        return
    code = (
        f"import os, signal\nos.setgid({uid}); os.setuid({uid})\ntry: os.kill(-1, "
        "signal.SIGKILL)\nexcept OSError: pass"
    )
    subprocess.run([sys.executable, "-c", code], timeout=30, check=False)


class MemoryCgroup:
    """A memory cgroup for one kernel: the cap holds for its whole process tree, and ``kill``
    reaches exactly the processes in it. Made below the grader's own cgroup (cgroup v2, else v1
    ``memory``)."""

    def __init__(self, path: str, level: str):
        self.path, self.level = path, level

    @staticmethod
    def _own(controller: str | None) -> str | None:
        try:
            lines = open("/proc/self/cgroup").read().splitlines()
        except OSError:
            return None
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if (controller is None and controllers == "") or (
                controller and controller in controllers.split(",")
            ):
                return path
        return None

    @classmethod
    def create(cls, name: str, memory_bytes: int) -> MemoryCgroup | None:
        """A new cgroup capped at ``memory_bytes`` (swap included where the kernel counts it), or
        None."""
        if os.geteuid() != 0 or not sys.platform.startswith("linux"):
            return None
        candidates = []
        own_v2 = cls._own(None)
        for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
            try:
                if (
                    own_v2 is not None
                    and "memory" in open(f"{mount}/cgroup.controllers").read().split()
                ):
                    candidates.append(
                        ("cgroup v2", mount + own_v2, "memory.max", "memory.swap.max")
                    )
            except OSError:
                pass
        own_v1 = cls._own("memory")
        if own_v1 is not None and os.path.isdir("/sys/fs/cgroup/memory"):
            candidates.append(
                (
                    "cgroup v1",
                    "/sys/fs/cgroup/memory" + own_v1,
                    "memory.limit_in_bytes",
                    "memory.memsw.limit_in_bytes",
                )
            )
        for level, parent, limit_file, swap_file in candidates:
            path = os.path.join(parent, name)
            try:
                os.mkdir(path, 0o755)
            except OSError:
                continue
            try:
                with open(os.path.join(path, limit_file), "w") as f:
                    f.write(str(memory_bytes))
                try:
                    with open(os.path.join(path, swap_file), "w") as f:
                        f.write(str(memory_bytes if "memsw" in swap_file else 0))
                except OSError:  # no swap accounting: the memory cap still holds
                    pass
                return cls(path, level)
            except OSError:
                try:
                    os.rmdir(path)
                except OSError:
                    pass
        return None

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(line) for line in f.read().split()]
        except OSError:
            return []

    def kill(self) -> None:
        import signal

        for _ in range(50):  # a process may fork while we kill: repeat until the cgroup is empty
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        self.kill()
        for _ in range(100):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:  # busy until the killed processes are reaped
                time.sleep(0.05)
