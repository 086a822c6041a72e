"""tasks.processes with real processes: readiness, early exits, stopping a whole process group,
and children that die with their parent (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.processes import (
    ManagedProcess,
    PrefectServer,
    ProcessStartError,
    _die_with_parent,
    free_port,
    http_answers,
    http_ready,
)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), None when it is gone or a zombie; with
    the PID it names one process, even if the PID is used again later."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def gone(pid: int, started: int, within: float) -> bool:
    """Whether the process that had this PID and start time has ended within `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if start_time(pid) != started:
            return True
        time.sleep(0.05)
    return start_time(pid) != started


def wait_for_file(path: Path, within: float = 10.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written within {within} s")


def kill_if_alive(pid: int, started: int | None) -> None:
    """Clean up after a failing test: end the process this test started, if it still runs."""
    if started is not None and start_time(pid) == started:
        os.kill(pid, signal.SIGKILL)


HTTP_SERVER = """
import http.server, sys, time
time.sleep(float(sys.argv[2]))  # a server that takes a moment to start
print("serving", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler
                       ).serve_forever()
"""


def test_start_waits_until_the_url_answers_and_stop_ends_it(tmp_path: Path) -> None:
    port = free_port()
    process = ManagedProcess(
        "slow http server",
        [PYTHON, "-c", HTTP_SERVER, str(port), "0.5"],
        log_path=tmp_path / "server.log",
        cwd=tmp_path,
        ready=f"http://127.0.0.1:{port}/",
        ready_timeout=20,
    )
    with process:
        assert http_answers(f"http://127.0.0.1:{port}/")  # ready means ready: no retry here
        assert process.running()
        pid, started = process.pid, start_time(process.pid)
        assert started is not None
    assert not process.running()
    assert process.returncode == -signal.SIGTERM
    assert gone(pid, started, within=1)
    assert not http_answers(f"http://127.0.0.1:{port}/", timeout=1)
    log = (tmp_path / "server.log").read_text()
    assert "serving" in log  # its output went to the log
    process.stop()  # a second stop does nothing
    assert process.returncode == -signal.SIGTERM


def test_a_readiness_function_is_polled_until_it_passes(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    calls: list[float] = []

    def ready() -> bool:
        calls.append(time.monotonic())
        return marker.exists()

    script = f"import pathlib, time; time.sleep(0.5); pathlib.Path({str(marker)!r}).touch(); "
    script += "time.sleep(60)"
    with ManagedProcess(
        "marker writer", [PYTHON, "-c", script], log_path=tmp_path / "m.log", ready=ready
    ) as process:
        assert marker.exists() and process.running()
    assert len(calls) >= 2  # not ready at first, ready later: it was polled


def test_a_process_that_exits_early_is_reported_with_its_log(tmp_path: Path) -> None:
    script = "import sys; print('cannot bind: address in use', file=sys.stderr); sys.exit(3)"
    process = ManagedProcess(
        "failing server",
        [PYTHON, "-c", script],
        log_path=tmp_path / "fail.log",
        ready=f"http://127.0.0.1:{free_port()}/",
        ready_timeout=30,
    )
    started = time.monotonic()
    with pytest.raises(ProcessStartError) as error:
        process.start()
    message = str(error.value)
    assert "failing server exited with code 3 before it was answering GET" in message
    assert "cannot bind: address in use" in message  # the log's tail is quoted
    assert str(tmp_path / "fail.log") in message
    assert time.monotonic() - started < 20  # noticed at once, not after the timeout
    assert not process.running()


def test_a_process_not_ready_in_time_is_stopped_and_reported(tmp_path: Path) -> None:
    script = "import time; print('still loading', flush=True); time.sleep(60)"
    process = ManagedProcess(
        "stuck server",
        [PYTHON, "-c", script],
        log_path=tmp_path / "stuck.log",
        ready=lambda: False,
        ready_timeout=1.0,
    )
    with pytest.raises(ProcessStartError) as error:
        process.start()
    message = str(error.value)
    assert "stuck server" in message and "was not ready within 1 s" in message
    assert "still loading" in message
    assert not process.running()
    assert process.returncode == -signal.SIGTERM  # stopped by start(), not left running


def test_waiting_after_start_stops_a_process_that_is_not_ready(tmp_path: Path) -> None:
    """start() returns at once without `ready`; a later wait_until that fails leaves nothing
    running (the command's server: it imports Prefect while the server starts)."""
    process = ManagedProcess(
        "late server", [PYTHON, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "l.log"
    ).start()
    assert process.running()
    with pytest.raises(ProcessStartError, match=r"late server .* was not ready within 1 s"):
        process.wait_until(http_ready(f"http://127.0.0.1:{free_port()}/"), timeout=1.0)
    assert not process.running()
    assert process.returncode == -signal.SIGTERM


# A grandchild that notes a SIGTERM and goes on, so only the group's SIGKILL ends it; it writes
# its PID once its handler is in place.
GRANDCHILD = """
import os, pathlib, signal, sys, time
def note(signum, frame):
    pathlib.Path(sys.argv[2]).write_text("SIGTERM")
signal.signal(signal.SIGTERM, note)
pathlib.Path(sys.argv[1]).write_text(f"{os.getpid()}\\n")
time.sleep(300)
"""
GROUP_LEADER = "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(300)"


@pytest.mark.parametrize("terminate_group", [True, False])
def test_stop_ends_the_whole_process_group(tmp_path: Path, terminate_group: bool) -> None:
    pid_file, noted = tmp_path / "grandchild.pid", tmp_path / "grandchild.sigterm"
    grandchild_args = [PYTHON, "-c", GRANDCHILD, str(pid_file), str(noted)]
    process = ManagedProcess(
        "group leader",
        [PYTHON, "-c", GROUP_LEADER, *grandchild_args],
        log_path=tmp_path / "leader.log",
        ready=pid_file.exists,
        ready_timeout=20,
        grace=1.0,
        terminate_group=terminate_group,
    ).start()
    grandchild = int(wait_for_file(pid_file))
    grandchild_started = start_time(grandchild)
    try:
        assert grandchild_started is not None
        assert os.getpgid(grandchild) == process.pid  # in the leader's group
        assert os.getpgid(process.pid) == process.pid != os.getpgid(0)  # not in ours
        began = time.monotonic()
        process.stop()
        assert gone(grandchild, grandchild_started, within=5), "the grandchild outlived stop()"
        assert time.monotonic() - began < 8  # SIGKILL after the 1 s grace, not much later
        assert not process.running()
        assert process.returncode == -signal.SIGTERM  # the leader left on SIGTERM
        # SIGTERM reached the grandchild only when sent to the group.
        assert noted.exists() == terminate_group, (tmp_path / "leader.log").read_text()
    finally:
        kill_if_alive(grandchild, grandchild_started)
        process.stop()


MIDDLE = """
import pathlib, signal, sys, time
from tasks.processes import ManagedProcess
death = None if sys.argv[2] == "none" else int(sys.argv[2])
child = ManagedProcess("child", [sys.executable, "-c", "import time; time.sleep(300)"],
                       log_path=pathlib.Path(sys.argv[1] + ".log"),
                       parent_death_signal=death).start()
pathlib.Path(sys.argv[1]).write_text(f"{child.pid}\\n")
time.sleep(300)
"""


def start_middle(tmp_path: Path, death: int | None) -> tuple[subprocess.Popen[bytes], int]:
    """A middle process that starts a child through ManagedProcess; returns it and the child's
    PID."""
    pid_file = tmp_path / f"child-{death}.pid"
    middle = subprocess.Popen(
        [PYTHON, "-c", MIDDLE, str(pid_file), "none" if death is None else str(death)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    try:
        return middle, int(wait_for_file(pid_file, within=30))
    except BaseException:
        middle.kill()
        middle.wait()
        raise


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("death", [signal.SIGTERM, signal.SIGKILL])
def test_a_child_with_parent_death_signal_dies_when_its_parent_is_killed(
    tmp_path: Path, death: int
) -> None:
    middle, child = start_middle(tmp_path, death)
    child_started = start_time(child)
    try:
        assert child_started is not None
        os.kill(middle.pid, signal.SIGKILL)  # the middle process cannot clean up
        middle.wait(timeout=10)
        assert gone(child, child_started, within=5), "the child outlived its killed parent"
    finally:
        kill_if_alive(child, child_started)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_without_parent_death_signal_the_child_outlives_its_killed_parent(
    tmp_path: Path,
) -> None:
    """The control for the test above: the same set-up leaves the child behind without it."""
    middle, child = start_middle(tmp_path, None)
    child_started = start_time(child)
    try:
        assert child_started is not None
        os.kill(middle.pid, signal.SIGKILL)
        middle.wait(timeout=10)
        assert not gone(child, child_started, within=1.5)
    finally:
        kill_if_alive(child, child_started)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_whose_parent_is_already_gone_does_not_run(tmp_path: Path) -> None:
    """The parent can die between fork and prctl, before the kernel would signal anything: the
    child then sees another parent and leaves before it runs its command. Simulated with a
    parent PID that is not the child's parent."""
    marker = tmp_path / "ran"
    not_the_parent = os.getpid() + 1  # the child's parent is this process
    result = subprocess.run(
        ["touch", str(marker)],
        preexec_fn=_die_with_parent(signal.SIGTERM, not_the_parent),
        timeout=30,
    )
    assert result.returncode == 1
    assert not marker.exists()
    # With the right parent, the same command runs.
    subprocess.run(
        ["touch", str(marker)], preexec_fn=_die_with_parent(signal.SIGTERM, os.getpid()), check=True
    )
    assert marker.exists()


def test_the_log_header_names_the_command_and_the_tail_is_bounded(tmp_path: Path) -> None:
    script = "print('x' * 10000)"
    process = ManagedProcess("printer", [PYTHON, "-c", script], log_path=tmp_path / "p.log")
    process.start()
    assert process.process is not None
    process.process.wait(timeout=30)
    log = (tmp_path / "p.log").read_text()
    assert log.startswith("# printer: ") and "print(" in log.splitlines()[0]
    assert process.log_tail(100) == log[-100:]
    process.stop()


@pytest.mark.slow
def test_prefect_server_as_prefects_temporary_server_starts_answers_and_stops(
    tmp_path: Path,
) -> None:
    """The uvicorn way (as Prefect's own temporary server): healthy, then gone with its group."""
    server = PrefectServer(tmp_path / "home", uvicorn=True, parent_death_signal=signal.SIGTERM)
    with server:
        assert http_answers(f"{server.api_url}/health")
        assert server.log_path == tmp_path / "home" / "server.log"
        assert (tmp_path / "home" / "prefect.db").exists()  # its own PREFECT_HOME
        pid, started = server.pid, start_time(server.pid)
        assert started is not None
    assert gone(pid, started, within=1)
    assert not http_answers(f"{server.api_url}/health", timeout=1)
