"""The supervisor restarts a dying process with capped exponential backoff and
gives up on a crash loop instead of spinning forever."""

from __future__ import annotations

import pytest

from stream.config import RestartSettings, WorkerSettings
from stream.runtime.supervisor import CrashLoopError, Supervisor


class _Crashed:
    """A process that has already died with status 1."""

    exitcode = 1
    pid = 4242


def _supervisor(restart: RestartSettings, clock: list[float], monkeypatch) -> Supervisor:
    monkeypatch.setattr("stream.runtime.supervisor.time.monotonic", lambda: clock[0])
    supervisor = Supervisor(WorkerSettings(), count=1, restart=restart)

    def start_process(key: str) -> None:  # no real process: each one dies at once
        supervisor.processes[key] = _Crashed()
        supervisor.names[key] = f"test-{key}"
        supervisor._started_at[key] = clock[0]

    supervisor.start_process = start_process
    return supervisor.start()


def test_backoff_doubles_up_to_its_cap():
    restart = RestartSettings(delay_s=1.0, max_delay_s=30.0)
    assert [restart.delay_before(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_restarts_wait_their_backoff_then_a_crash_loop_is_an_error(monkeypatch, caplog):
    clock = [1000.0]
    restart = RestartSettings(delay_s=1.0, max_delay_s=3.0, max_restarts=3)
    supervisor = _supervisor(restart, clock, monkeypatch)
    restart_times = []
    for _ in range(3):
        supervisor.check()  # sees the crash, schedules the restart
        before = supervisor.restarts.get("w0", 0)
        # Bounded: the backoff is at most 3 s of the fake clock, 6 steps of 0.5 s.
        for _ in range(20):
            if supervisor.restarts.get("w0", 0) != before:
                break
            clock[0] += 0.5
            supervisor.check()
        else:
            pytest.fail(f"no restart within 10 s of the fake clock: {supervisor.restarts}")
        restart_times.append(clock[0])
    gaps = [b - a for a, b in zip([1000.0, *restart_times], restart_times, strict=False)]
    assert gaps == [1.0, 2.0, 3.0]  # 1, 2, then capped at 3 (not 4)
    assert supervisor.restarts == {"w0": 3}
    with pytest.raises(CrashLoopError, match=r"w0 .* crashed 4 times in a row"):
        supervisor.check()
    assert "crash loop" in caplog.text


def test_a_process_that_ran_long_enough_starts_its_count_afresh(monkeypatch):
    clock = [0.0]
    restart = RestartSettings(delay_s=0.0, max_delay_s=0.0, max_restarts=1, stable_after_s=60)
    supervisor = _supervisor(restart, clock, monkeypatch)
    for _ in range(5):
        clock[0] += 61  # each life lasted longer than stable_after_s
        supervisor.check()
        supervisor.check()
    assert supervisor.restarts == {"w0": 5}
