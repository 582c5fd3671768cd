"""Worker processes: the entry of one, and a supervisor that runs N on this machine.

Each worker is its own OS process (river and the Kafka client are pure Python;
threads would share one core). More machines means starting more supervisors
with the same group id: Kafka spreads the partitions, there is no cluster of ours.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.context import SpawnProcess

from stream.config import WorkerSettings
from stream.logs import LogFormat, configure
from stream.worker import Worker

logger = logging.getLogger(__name__)

_SPAWN = multiprocessing.get_context("spawn")


def worker_name(index: int) -> str:
    return f"{socket.gethostname()}-{os.getpid()}-w{index}"


def run_worker(
    settings: WorkerSettings,
    name: str,
    log_level: str,
    log_format: LogFormat,
    assignments: multiprocessing.Queue | None = None,
) -> None:
    """Entry of one worker process: SIGTERM/SIGINT finish the batch, flush, commit, exit 0.

    ``assignments`` receives ``(name, partitions)`` after every rebalance, so a
    supervisor can tell when the group has settled.
    """
    configure(log_level, log_format)
    on_assign = None if assignments is None else (lambda n, parts: assignments.put((n, parts)))
    worker = Worker(settings, name, on_assign=on_assign)

    def _stop(signum: int, _frame: object) -> None:
        logger.info("stop requested worker=%s signal=%s", name, signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run()


class Supervisor:
    """Runs ``count`` worker processes; restarts one that dies; stops all on request.

    A crashed worker is restarted after ``restart_delay_s`` (its partitions go to
    the others meanwhile, via the group); a worker that exits 0 was asked to stop
    and is not restarted.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        count: int,
        log_level: str = "INFO",
        log_format: LogFormat = "text",
        restart_delay_s: float = 1.0,
        stop_timeout_s: float = 30.0,
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.settings = settings
        self.count = count
        self.log_level = log_level
        self.log_format = log_format
        self.restart_delay_s = restart_delay_s
        self.stop_timeout_s = stop_timeout_s
        self.processes: dict[int, SpawnProcess] = {}
        self.names: dict[int, str] = {}
        self.assignments: dict[str, list[int]] = {}
        self._assignment_queue = _SPAWN.Queue()
        self._stopping = False

    def _start_one(self, index: int) -> None:
        name = worker_name(index)
        process = _SPAWN.Process(
            target=run_worker,
            args=(self.settings, name, self.log_level, self.log_format, self._assignment_queue),
            name=f"worker-{index}",
            daemon=False,
        )
        process.start()
        self.processes[index] = process
        self.names[index] = name
        logger.info("worker process started index=%d pid=%d name=%s", index, process.pid, name)

    def start(self) -> Supervisor:
        for index in range(self.count):
            self._start_one(index)
        return self

    def check(self) -> None:
        """Restart workers that died (call periodically)."""
        if self._stopping:
            return
        for index, process in list(self.processes.items()):
            if process.exitcode == 0:
                # Asked to stop on its own (someone sent it SIGTERM): respect that.
                logger.info("worker process stopped index=%d pid=%d", index, process.pid)
                del self.processes[index]
            elif process.exitcode is not None:
                logger.warning(
                    "worker process exited index=%d pid=%d exitcode=%s; restarting",
                    index,
                    process.pid,
                    process.exitcode,
                )
                time.sleep(self.restart_delay_s)
                self._start_one(index)

    def _drain_assignments(self) -> None:
        while not self._assignment_queue.empty():
            name, partitions = self._assignment_queue.get_nowait()
            self.assignments[name] = partitions

    def wait_assigned(self, partitions: int, timeout_s: float) -> dict[str, list[int]]:
        """Block until every live worker holds partitions and together they hold
        all ``partitions`` exactly once (the group has settled); return who has what."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check()
            self._drain_assignments()
            live = [self.names[i] for i in self.processes]
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
        """SIGTERM all, wait for their final commit, SIGKILL stragglers."""
        self._stopping = True
        for process in self.processes.values():
            if process.exitcode is None and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for index, process in self.processes.items():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                logger.warning(
                    "worker did not stop in time; killing index=%d pid=%d", index, process.pid
                )
                process.kill()
                process.join()
        logger.info(
            "workers stopped exitcodes=%s", {i: p.exitcode for i, p in self.processes.items()}
        )

    def run_until_signal(self) -> int:
        """Foreground mode for ``learnstream work``: Ctrl-C / SIGTERM stop everything."""
        stop = {"requested": False}

        def _request(signum: int, _frame: object) -> None:
            stop["requested"] = True

        signal.signal(signal.SIGTERM, _request)
        signal.signal(signal.SIGINT, _request)
        self.start()
        try:
            while not stop["requested"] and self.processes:
                self.check()
                time.sleep(0.2)
        finally:
            self.stop()
        return 0
