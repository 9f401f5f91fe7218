"""Start ``torchrun`` (or a plain process) from Python and stream its output, on loopback only.

These helpers build the command a user would type, e.g.::

    torchrun --nnodes 1 --nproc_per_node 2 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:29400 \\
        -m vidlab train --model vit_test --data-dir data/synthetic-smoke --batch-size 4

and run it as a subprocess whose lines are printed as they arrive. Every address is
``127.0.0.1`` and gloo is pinned to the loopback interface, so nothing leaves the machine.
"""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def loopback_interface() -> str:
    """Name of the loopback network interface (``lo`` on Linux, ``lo0`` on macOS)."""
    names = [name for _, name in socket.if_nameindex()]
    for name in names:
        if name == "lo" or name.startswith("lo"):
            return name
    raise RuntimeError(f"no loopback interface among {names}")


def torchrun_executable() -> list[str]:
    """``torchrun`` of the running Python's environment (``python -m torch.distributed.run`` otherwise)."""
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


def torchrun_command(
    args: Sequence[str],
    *,
    nproc_per_node: int,
    nnodes: int = 1,
    port: int,
    rdzv_id: str = "vidlab",
    max_restarts: int = 0,
    module: str = "vidlab",
) -> list[str]:
    """``torchrun ... -m MODULE ARGS`` with a c10d rendezvous on ``127.0.0.1:port``.

    With ``nnodes > 1`` run the same command once per "machine" (here: once per launcher on
    this host); the launchers meet at the rendezvous and number the workers 0..N-1.
    """
    return [
        *torchrun_executable(),
        "--nnodes", str(nnodes),
        "--nproc_per_node", str(nproc_per_node),
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"{LOOPBACK}:{port}",
        "--rdzv-id", rdzv_id,
        "--local-addr", LOOPBACK,
        "--max-restarts", str(max_restarts),
        "-m", module,
        *map(str, args),
    ]


def python_command(args: Sequence[str], *, module: str = "vidlab") -> list[str]:
    """``python -m MODULE ARGS`` with the running interpreter (one process, no torchrun)."""
    return [sys.executable, "-m", module, *map(str, args)]


def display_command(cmd: Sequence[str]) -> str:
    """The command as a user would type it (``torchrun`` / ``python`` instead of full paths)."""
    parts = list(cmd)
    if parts and Path(parts[0]).name == "torchrun":
        parts[0] = "torchrun"
    elif parts[:3] == [sys.executable, "-m", "torch.distributed.run"]:
        parts = ["torchrun", *parts[3:]]
    elif parts and parts[0] == sys.executable:
        parts[0] = "python"
    return shlex.join(parts)


def launch_env(threads: int | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a launched run: gloo on loopback, unbuffered output, and ``OMP_NUM_THREADS``.

    ``threads=None`` leaves ``OMP_NUM_THREADS`` unset, so torchrun sets it to 1 per worker
    (a plain ``python`` process then uses all cores).
    """
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(int(threads))
    env["GLOO_SOCKET_IFNAME"] = loopback_interface()
    env["PYTHONUNBUFFERED"] = "1"
    env["MASTER_ADDR"] = LOOPBACK
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class RunResult:
    """A finished subprocess: exit status, its output lines and wall time."""

    command: str
    returncode: int
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> "RunResult":
        """Raise ``RuntimeError`` with the output's last lines when the run failed."""
        if not self.ok:
            tail = "\n".join(self.output.splitlines()[-25:])
            raise RuntimeError(f"`{self.command}` exited with {self.returncode}:\n{tail}")
        return self


def _pump(proc: subprocess.Popen, prefix: str, lines: list[str], echo: bool) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if echo:
            print(prefix + line, end="", flush=True)


def run_commands(
    commands: Sequence[Sequence[str]],
    *,
    env: Mapping[str, str] | None = None,
    prefixes: Sequence[str] | None = None,
    echo: bool = True,
    timeout: float | None = None,
) -> list[RunResult]:
    """Start every command at once, print their lines as they come (with a prefix each), wait for all.

    On ``timeout`` (seconds) the still-running commands are killed and get return code -9.
    """
    prefixes = list(prefixes) if prefixes is not None else [""] * len(commands)
    procs, threads, outputs = [], [], []
    start = time.perf_counter()
    for cmd, prefix in zip(commands, prefixes):
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(env) if env is not None else None, bufsize=1, start_new_session=True)
        lines: list[str] = []
        thread = threading.Thread(target=_pump, args=(proc, prefix, lines, echo), daemon=True)
        thread.start()
        procs.append(proc)
        threads.append(thread)
        outputs.append(lines)
    results = []
    for cmd, proc, thread, lines in zip(commands, procs, threads, outputs):
        remaining = None if timeout is None else max(0.1, timeout - (time.perf_counter() - start))
        try:
            rc = proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            rc = proc.wait()
        thread.join(timeout=5)
        results.append(RunResult(display_command(cmd), rc, "".join(lines), time.perf_counter() - start))
    return results


def run_command(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, prefix: str = "", echo: bool = True,
                timeout: float | None = None) -> RunResult:
    """Run one command, printing its output lines as they arrive; see :func:`run_commands`."""
    return run_commands([cmd], env=env, prefixes=[prefix], echo=echo, timeout=timeout)[0]
