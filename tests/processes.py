"""Processes the tests start: servers that must come up healthy and go down whole, and a census of
what a test run leaves behind."""

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def streamlit_server(command: list[str], port: int, *, cwd: Path | None = None, env: dict | None = None,
                     log: Path | None = None, start_timeout_s: float = 120) -> Iterator[str]:
    """Run ``command`` (which serves the app on ``port``) until its health check answers; yield its URL.

    The server gets a process group of its own. On exit only the *command's* process is sent
    SIGTERM, as a process manager would, and the port must then close: that is what proves
    `spiral app` stops its server. Anything left of the group is then killed and reported.
    """
    output = open(log, "wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            if process.poll() is not None:
                raise AssertionError(f"{command} exited with {process.returncode} before serving"
                                     + (f"; its output is in {log}" if log else ""))
            if time.monotonic() > deadline:
                raise AssertionError(f"{command} did not serve {url} within {start_timeout_s:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        finally:
            survivors = _group_members(process.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            if log:
                output.close()
    assert not survivors, f"stopping {command[:3]} left processes of its group running: {survivors}"
    deadline = time.monotonic() + 10
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not port_open(port), f"port {port} still listens after {command[:3]} was stopped"


def _group_members(group: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


def descendants(pid: int | None = None) -> set[int]:
    """Live (not zombie) descendants of a process (default: this one), read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = set(), [pid or os.getpid()]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def describe(pids: set[int]) -> list[str]:
    """``pid: command line`` of each process still there."""
    lines = []
    for pid in sorted(pids):
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            lines.append(f"{pid}: {command[:200]}")
    return lines


def listening_process(port: int) -> int:
    """The PID of the process that listens on TCP ``port`` (IPv4 or IPv6), read from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if os.readlink(fd) in inodes:
                return int(fd.parent.parent.name)
    raise LookupError(f"no process listens on port {port}")


def resident_bytes(pid: int) -> int:
    """A process's resident memory (VmRSS), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
