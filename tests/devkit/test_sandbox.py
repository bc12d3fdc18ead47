"""`python -m elevation.devkit.sandbox` serves until told to stop, by SIGTERM or SIGINT, even in the background."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from elevation.devkit.emulator import EmulatorControl
from elevation.devkit.sandbox import read_env

STARTUP_TIMEOUT = 60.0
EXIT_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Another server could listen there now (SO_REUSEADDR, as servers bind: closed connections may linger)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
        return True


@contextmanager
def sandbox(
    args: list[str], cwd: Path, env_sh: Path, preexec_fn: Callable[[], None] | None = None
) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], Path]]:
    """Start the sandbox and wait for its env.sh; the process is killed if the test leaves it running."""
    output = cwd / "sandbox.out"
    with output.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "elevation.devkit.sandbox", *args],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=preexec_fn,  # noqa: PLW1509 (only sets a signal disposition)
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not env_sh.exists():
            assert proc.poll() is None, f"the sandbox exited early:\n{output.read_text()}"
            assert time.monotonic() < deadline, f"no env.sh after {STARTUP_TIMEOUT} s:\n{output.read_text()}"
            time.sleep(0.1)
        yield proc, read_env(env_sh), output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop_and_check(proc: subprocess.Popen[str], signum: int, port: int, output: Path) -> None:
    started = time.monotonic()
    proc.send_signal(signum)
    assert proc.wait(timeout=EXIT_TIMEOUT) == 0, output.read_text()
    assert time.monotonic() - started < EXIT_TIMEOUT
    assert port_is_free(port), f"port {port} still bound after the sandbox exited"
    assert "sandbox stopped" in output.read_text()


def test_sandbox_serves_its_control_endpoint_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    folder = tmp_path / "sb"
    with sandbox(["--port", str(port), "--dir", str(folder)], tmp_path, folder / "env.sh") as (proc, env, out):
        assert env["ELEVATION_EMULATOR_URL"] == f"http://127.0.0.1:{port}"
        assert env["ELEVATION_CONFIG"] == str(folder / "elevation.yaml")
        assert env["AIRFLOW_HOME"] == str(folder / "airflow")
        control = EmulatorControl(env["ELEVATION_EMULATOR_URL"])
        calls = control.calls()
        assert calls.count("CreateOrganization") == 1  # the demo organization was built through the emulator
        assert len(control.assignments()) == 4  # the world's standing assignments
        printed = out.read_text()
        assert f"http://127.0.0.1:{port}/_emulator" in printed
        assert f"kill {proc.pid}" in printed
        stop_and_check(proc, signal.SIGTERM, port, out)


def test_sandbox_started_in_the_background_stops_on_sigint(tmp_path: Path) -> None:
    """A shell starts `... &` with SIGINT ignored; the sandbox must still stop on it, and default to ./.sandbox."""
    port = free_port()

    def like_a_background_job() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    with sandbox(["--port", str(port)], tmp_path, tmp_path / ".sandbox" / "env.sh", like_a_background_job) as (
        proc,
        env,
        out,
    ):
        assert env["ELEVATION_DATABASE_URL"] == f"sqlite:///{tmp_path / '.sandbox' / 'queue.db'}"
        assert EmulatorControl(env["ELEVATION_EMULATOR_URL"]).status()["endpoint_url"] == (
            f"http://127.0.0.1:{port}"
        )
        stop_and_check(proc, signal.SIGINT, port, out)


def test_sandbox_on_a_busy_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "elevation.devkit.sandbox", "--port", str(port), "--dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert f"cannot serve on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr


@pytest.mark.parametrize(
    "expected",
    ["--port", "default: 5000", "--dir", "default: .sandbox in the current directory", "--dags", "kill <pid>"],
)
def test_help_says_what_each_option_does_and_its_default(expected: str) -> None:
    from elevation.devkit.sandbox import build_parser

    assert expected in " ".join(build_parser().format_help().split())
