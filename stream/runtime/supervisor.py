"""Worker processes: the entry of one, and a supervisor that runs N on this machine.

Each worker is its own OS process (the hot loop is Python code that holds the
GIL; threads would share one core). More machines means starting more supervisors
with the same group id: Kafka spreads the partitions, there is no cluster of ours.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import socket
import sys
import threading
import time
from dataclasses import replace
from multiprocessing.context import SpawnProcess

from stream.config import MergerSettings, RestartSettings, WorkerSettings
from stream.errors import StreamError
from stream.observe.logs import LogFormat, configure
from stream.runtime.identity import life_id, new_incarnation
from stream.runtime.merger import Merger
from stream.runtime.worker import Worker

logger = logging.getLogger(__name__)

_SPAWN = multiprocessing.get_context("spawn")


def worker_name(index: int) -> str:
    """The worker's name: the same for every life of it (restarts, and a restarted
    container, keep it). The protocol tells lives apart by their incarnation
    (:mod:`stream.runtime.identity`), not by this name."""
    return f"{socket.gethostname()}-{os.getpid()}-w{index}"


def merger_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-merger"


class CrashLoopError(StreamError):
    """A process kept dying right after each restart; the supervisor gave up."""


def _exit_on_failure(what: str, name: str, run) -> None:
    """Run ``run()``; if it raises, log one line saying why and exit 1 (the
    supervisor restarts the process). Records never get here: the worker
    dead-letters whatever one record makes raise; this is for what lies outside
    them (the broker gone for good, a full disk)."""
    try:
        run()
    except Exception as exc:
        logger.error("%s failed %s=%s error=%r; exiting with status 1", what, what, name, exc)
        logger.debug("%s failure traceback", what, exc_info=exc)
        sys.exit(1)


def run_worker(
    settings: WorkerSettings,
    name: str,
    log_level: str,
    log_format: LogFormat,
    assignments: multiprocessing.Queue | None = None,
    restarts: int = 0,
    incarnation: str | None = None,
) -> None:
    """Entry of one worker process: SIGTERM/SIGINT finish the batch, flush, commit, exit 0.

    ``assignments`` receives ``(name, partitions)`` after every rebalance, so a
    supervisor can tell when the group has settled. ``incarnation``: this
    life's, made by whoever starts it (a fresh one if None).
    """
    configure(log_level, log_format)
    on_assign = None if assignments is None else (lambda n, parts: assignments.put((n, parts)))
    worker = Worker(settings, name, on_assign=on_assign, incarnation=incarnation)
    worker.restarts = restarts

    def _stop(signum: int, _frame: object) -> None:
        logger.info("stop requested worker=%s signal=%s", name, signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    _exit_on_failure("worker", name, worker.run)


def run_merger(
    settings: MergerSettings, name: str, log_level: str, log_format: LogFormat, restarts: int = 0
) -> None:
    """Entry of the merger process: SIGTERM/SIGINT stop it after the current merge."""
    configure(log_level, log_format)
    merger = Merger(settings, name)
    merger.restarts = restarts

    def _stop(signum: int, _frame: object) -> None:
        logger.info("stop requested merger=%s signal=%s", name, signal.Signals(signum).name)
        merger.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    _exit_on_failure("merger", name, merger.run)


class Supervisor:
    """Runs ``count`` worker processes (and a merger, when given merger settings);
    restarts one that dies; stops all on request.

    A crashed process is restarted with exponential backoff (``restart``: a
    worker's partitions go to the others meanwhile, via the group; a standby
    merger, if any runs elsewhere, takes over merging); a process that exits 0
    was asked to stop and is not restarted. Each restart is logged and counted
    (``restarts``, and the restarted process exposes its count as a metric).
    After ``restart.max_restarts`` crashes in a row, :meth:`check` raises
    :class:`CrashLoopError`: a crash loop is reported, not spun forever.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        count: int,
        merger: MergerSettings | None = None,
        log_level: str = "INFO",
        log_format: LogFormat = "text",
        restart: RestartSettings | None = None,
        stop_timeout_s: float = 9.0,
    ) -> None:
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self.settings = settings
        self.count = count
        self.merger_settings = merger
        self.log_level = log_level
        self.log_format = log_format
        self.restart = restart if restart is not None else RestartSettings()
        # Per process key: restarts in all, crashes in a row, when it last
        # started (monotonic), and when a pending restart is due.
        self.restarts: dict[str, int] = {}
        self._crashes_in_a_row: dict[str, int] = {}
        self._started_at: dict[str, float] = {}
        self._restart_due: dict[str, float] = {}
        self.stop_timeout_s = stop_timeout_s
        self.processes: dict[str, SpawnProcess] = {}
        self.names: dict[str, str] = {}
        # Per worker key: its current life (name~incarnation), new on every restart.
        self.lives: dict[str, str] = {}
        self.assignments: dict[str, list[int]] = {}
        self._assignment_queue = _SPAWN.Queue()
        self._stopping = False

    def start_process(self, key: str) -> None:
        """Start (or restart) the process ``key``: ``w<index>`` or ``merger``.

        A restarted process runs with no crash point armed: an armed crash point
        fires in a process's first life only, so a test sees one crash and the
        recovery from it.
        """
        # One metrics port per process: worker i on base + i, the merger after them.
        base = self.settings.metrics_port
        crash_at = None if key in self.processes else self.settings.crash_at
        life = None
        if key == "merger":
            assert self.merger_settings is not None
            name = merger_name()
            crash_at = None if key in self.processes else self.merger_settings.crash_at
            settings = replace(
                self.merger_settings,
                metrics_port=base + self.count if base else 0,
                crash_at=crash_at,
            )
            target = run_merger
            args = (settings, name, self.log_level, self.log_format, self.restarts.get(key, 0))
        else:
            index = int(key[1:])
            name = worker_name(index)
            # A new life on every start and restart, under the same name.
            incarnation = new_incarnation()
            life = life_id(name, incarnation)
            worker = replace(
                self.settings, metrics_port=base + index if base else 0, crash_at=crash_at
            )
            target = run_worker
            args = (
                worker,
                name,
                self.log_level,
                self.log_format,
                self._assignment_queue,
                self.restarts.get(key, 0),
                incarnation,
            )
        process = _SPAWN.Process(target=target, args=args, name=key, daemon=False)
        process.start()
        self.processes[key] = process
        self.names[key] = name
        if life is not None:
            self.lives[key] = life
        self._started_at[key] = time.monotonic()
        logger.info(
            "process started key=%s pid=%d name=%s life=%s", key, process.pid, name, life or "-"
        )

    def start(self) -> Supervisor:
        if self.merger_settings is not None:
            self.start_process("merger")
        for index in range(self.count):
            self.start_process(f"w{index}")
        return self

    @property
    def workers(self) -> dict[str, SpawnProcess]:
        return {k: p for k, p in self.processes.items() if k != "merger"}

    def check(self) -> None:
        """Restart processes that died, each when its backoff is over (call
        periodically; it never sleeps). Raises CrashLoopError when one keeps dying."""
        if self._stopping:
            return
        now = time.monotonic()
        for key, process in list(self.processes.items()):
            if key in self._restart_due:
                if now >= self._restart_due[key]:
                    del self._restart_due[key]
                    self.restarts[key] = self.restarts.get(key, 0) + 1
                    self.start_process(key)
            elif process.exitcode == 0:
                # Asked to stop on its own (someone sent it SIGTERM): respect that.
                logger.info("process stopped key=%s pid=%d", key, process.pid)
                del self.processes[key]
            elif process.exitcode is not None:
                self._crashed(key, process, now)

    def _crashed(self, key: str, process: SpawnProcess, now: float) -> None:
        r = self.restart
        if now - self._started_at.get(key, now) >= r.stable_after_s:
            self._crashes_in_a_row[key] = 0  # it had recovered: a fresh start
        crashes = self._crashes_in_a_row.get(key, 0) + 1
        self._crashes_in_a_row[key] = crashes
        if crashes > r.max_restarts:
            message = (
                f"process {key} ({self.names.get(key)}) crashed {crashes} times in a row, "
                f"each within {r.stable_after_s:g} s of its start (last exit code "
                f"{process.exitcode}); giving up: see its last log lines for why"
            )
            logger.error("crash loop: %s", message)
            raise CrashLoopError(message)
        delay = r.delay_before(crashes)
        logger.warning(
            "process exited key=%s pid=%d exitcode=%s; restart %d of at most %d in a row in %.1f s",
            key,
            process.pid,
            process.exitcode,
            crashes,
            r.max_restarts,
            delay,
        )
        self._restart_due[key] = now + delay

    def _drain_assignments(self) -> None:
        while True:
            try:
                name, partitions = self._assignment_queue.get_nowait()
            except queue.Empty:
                return
            self.assignments[name] = partitions

    def wait_assigned(self, partitions: int, timeout_s: float) -> dict[str, list[int]]:
        """Block until every live worker holds partitions and together they hold
        all ``partitions`` exactly once (the group has settled); return who has what."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check()
            self._drain_assignments()
            live = [self.names[k] for k in self.workers]
            current = [self.assignments.get(name) for name in live]
            expected_members = min(len(live), partitions)
            held = [parts for parts in current if parts]
            flat = [p for parts in held for p in parts]
            if len(held) == expected_members and sorted(flat) == list(range(partitions)):
                return {name: self.assignments[name] for name in live if self.assignments.get(name)}
            time.sleep(0.1)
        raise TimeoutError(
            f"workers did not settle on {partitions} partitions in {timeout_s}s: {self.assignments}"
        )

    def stop(self) -> None:
        """SIGTERM the workers, wait for their final commit, then the merger (so it
        merges their last contributions); SIGKILL what still runs after
        ``stop_timeout_s`` in all.

        One deadline for both steps: ``learnstream work`` ends within 10 s of its
        SIGTERM (``docker stop`` kills at 10 s anyway). A SIGKILLed straggler
        loses nothing: the protocol recovers from SIGKILL at any point.
        """
        self._stopping = True
        deadline = time.monotonic() + self.stop_timeout_s
        self._terminate(self.workers, deadline)
        self._terminate({k: p for k, p in self.processes.items() if k == "merger"}, deadline)
        logger.info(
            "processes stopped exitcodes=%s", {k: p.exitcode for k, p in self.processes.items()}
        )

    def _terminate(self, processes: dict[str, SpawnProcess], deadline: float) -> None:
        for process in processes.values():
            if process.exitcode is None and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for key, process in processes.items():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                logger.warning(
                    "process did not stop in time; killing key=%s pid=%d", key, process.pid
                )
                process.kill()
                process.join()

    def run_until_signal(self) -> int:
        """Foreground mode for ``learnstream work``: Ctrl-C / SIGTERM stop everything."""
        stop = threading.Event()

        def _request(signum: int, _frame: object) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _request)
        signal.signal(signal.SIGINT, _request)
        return self.run_until(stop)

    def run_until(self, stop: threading.Event) -> int:
        """Start, watch and restart the processes until ``stop`` is set (or all
        have exited); then stop them. 1 after a crash loop, else 0."""
        self.start()
        try:
            while not stop.is_set() and self.processes:
                self.check()
                self._drain_assignments()  # else the workers' reports pile up
                time.sleep(0.2)
        except CrashLoopError:
            return 1  # logged by check()
        finally:
            self.stop()
        return 0
