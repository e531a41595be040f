"""`regsync serve`: every rule on its own schedule, reloadable, stopping gracefully.

One loop per rule, so a rule never overlaps itself; rules run independently of each other (each
run has its own HTTP session). The first run of every rule starts at once.

Signals: SIGHUP reloads the config (an invalid file is reported and the running config kept);
SIGTERM/SIGINT stop starting work, give runs in progress ``grace`` seconds to finish their
started copies, then cancel what is left. Cancelling is safe because the copy engine pushes a
tag only after everything it references is in place: a cancelled copy leaves at most unreferenced
blobs, never a tag pointing at missing content. A second signal cancels at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regsync import __version__
from regsync.blobindex import BlobIndex
from regsync.config import Config, Rule, load_config
from regsync.errors import ConfigError
from regsync.eventhttp import add_routes
from regsync.logs import log_context
from regsync.metrics import Metrics, iso_time
from regsync.result import RuleResult, RunResult
from regsync.runner import run
from regsync.schedule import Timing, jitter
from regsync.server import make_app, start
from regsync.shard import Shard
from regsync.summary import rule_json
from regsync.triggers import EventDispatcher, EventRunEvents, targets_of

log = logging.getLogger(__name__)


@dataclass
class RuleState:
    """One rule's schedule and the outcome of its runs (what /status shows)."""

    rule: Rule
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    runs: int = 0
    running_since: float | None = None
    last_started: float | None = None
    last_finished: float | None = None
    last_result: RuleResult | None = None
    last_success: float | None = None
    last_error: str | None = None
    next_run: float | None = None
    jitter: float = 0.0
    removed: bool = False

    @property
    def timing(self) -> Timing:
        return Timing(self.rule.interval, self.rule.schedule)

    def due(self, now: float) -> float:
        if self.last_started is None:
            return now  # the first run starts at once
        return self.timing.next_run(self.last_started, now) + self.jitter

    def record(self, result: RuleResult, started: float) -> None:
        self.runs += 1
        self.last_finished = time.time()
        self.last_result = result
        if result.result == "success":
            self.last_success = self.last_finished
        self.last_error = result.errors[-1] if result.errors else None
        self.jitter = jitter(self.timing.period(started))

    def to_json(self) -> dict[str, Any]:
        last = self.last_result
        return {
            "name": self.rule.name,
            "source": str(self.rule.source),
            "destination": str(self.rule.destination),
            "schedule": self.timing.describe(),
            "interval_seconds": self.timing.period(time.time()),
            "running": self.running_since is not None,
            "running_since": iso_time(self.running_since),
            "runs": self.runs,
            "last_run": None
            if last is None
            else {
                "started_at": iso_time(self.last_started),
                "finished_at": iso_time(self.last_finished),
                **rule_json(last),
            },
            "last_success_at": iso_time(self.last_success),
            "last_error": self.last_error,
            "next_run_at": None if self.running_since is not None else iso_time(self.next_run),
        }


class Daemon:
    """Schedules every rule of a config, reloads it, and stops gracefully."""

    def __init__(
        self,
        config_path: str,
        config: Config,
        metrics: Metrics,
        grace: float,
        shard: Shard | None = None,
        runner: Callable[..., Awaitable[RunResult]] = run,
    ) -> None:
        self.config_path = str(Path(config_path).resolve())
        self.config = config
        self.metrics = metrics
        self.grace = grace
        self.shard = shard or Shard()
        self._runner = runner  # the real runner; tests pass a scripted one
        self.started = time.time()
        self.loaded_at = self.started
        self.reload_error: str | None = None
        self.states: dict[str, RuleState] = {}
        self.stopping = asyncio.Event()
        self._stop_runs = asyncio.Event()  # tells runs in progress to start no more copies
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reloading = asyncio.Lock()
        self._reload_pending = False  # a SIGHUP came while starting
        self._busy: dict[str, asyncio.Event] = {}  # rule name / copy -> its run in progress
        self.events = EventDispatcher(self, metrics)
        for rule in config.rules:
            self._add(rule)
        self.events.configured()

    # -- control ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stop(); then drain within the grace period and return."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            for state in self.states.values():
                self._spawn(state)
            if self._reload_pending:
                self.request_reload()
            await self.stopping.wait()
            log.info("stopping: waiting up to %gs for runs in progress", self.grace)
            self._stop_runs.set()
            for state in self.states.values():
                state.wake.set()
            if self._tasks:
                _, pending = await asyncio.wait(set(self._tasks), timeout=self.grace)
                for task in pending:
                    task.cancel()
                if pending:
                    log.warning("grace period over: cancelled %d runs in progress", len(pending))
        log.info("stopped")

    def stop(self) -> None:
        if self.stopping.is_set():  # a second signal: do not wait any longer
            log.warning("second stop signal: cancelling runs in progress")
            for task in self._tasks:
                task.cancel()
            return
        self.stopping.set()

    def request_reload(self) -> None:
        """SIGHUP: reload in a task of the daemon, so the signal handler returns at once."""
        if self.stopping.is_set():
            log.warning("reload ignored: the daemon is stopping")
            return
        if self._group is None:  # starting: `run` reloads as soon as it can
            self._reload_pending = True
            return
        self._group.create_task(self.reload(), name="reload")

    async def reload(self) -> None:
        """Re-read the config file; keep the running config when the new one is invalid.

        The file is read and parsed in a thread: however slow it is to read or parse, the
        loop keeps answering /healthz and signals. Reloads apply in the order requested.
        """
        async with self._reloading:
            try:
                config = await asyncio.to_thread(load_config, self.config_path)
            except (ConfigError, OSError) as exc:
                self.reload_error = str(exc)
                log.error("reload failed, keeping the running config: %s", exc)
                return
            except Exception as exc:  # a bug, not the file: the daemon keeps serving
                self.reload_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.error("reload failed, keeping the running config: %s", self.reload_error)
                return
            if self.stopping.is_set():
                return  # no new rules for a daemon that is draining
            self._apply(config)

    def _apply(self, config: Config) -> None:
        self.config, self.reload_error, self.loaded_at = config, None, time.time()
        names = {rule.name for rule in config.rules}
        for name in [n for n in self.states if n not in names]:
            state = self.states.pop(name)
            state.removed = True
            state.wake.set()
        for rule in config.rules:
            known = self.states.get(rule.name)
            if known is None:
                self._spawn(self._add(rule))
            else:
                state = known
                state.rule = rule
                self.metrics.rule_configured(rule.name, state.timing.period(time.time()))
                state.wake.set()  # its timing may have changed
        self.events.configured()
        log.info("reloaded %s: %d rules", self.config_path, len(config.rules))

    # -- events (the HTTP handlers call these; no I/O) ------------------------------------------

    def wake(self, rule: str) -> None:
        state = self.states.get(rule)
        if state is not None:
            state.wake.set()

    def accepting(self) -> bool:
        return not self.stopping.is_set()

    def start_cycle(self, rule: str) -> str:
        """``POST /v1/rules/RULE/run``: "started", "running" or "unknown"."""
        state = self.states.get(rule)
        if state is None:
            return "unknown"
        if state.running_since is not None:
            return "running"
        self.events.run_requested(rule)
        return "started"

    # -- status ----------------------------------------------------------------------------

    def ready(self) -> bool:
        """Config loaded, not stopping, and the first run of every rule finished."""
        return not self.stopping.is_set() and all(s.runs > 0 for s in self.states.values())

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "started_at": iso_time(self.started),
            "ready": self.ready(),
            "stopping": self.stopping.is_set(),
            "shard": None if self.shard.is_whole else str(self.shard),
            "config": {
                "path": self.config_path,
                "loaded_at": iso_time(self.loaded_at),
                "reload_error": self.reload_error,
            },
            "rules": [
                {**s.to_json(), "events": self.events.rule_status(n)}
                for n, s in self.states.items()
            ],
            "registries": self.events.merged(self.metrics.registry_status()),
        }

    # -- the loops -------------------------------------------------------------------------

    def _add(self, rule: Rule) -> RuleState:
        state = self.states[rule.name] = RuleState(rule)
        self.metrics.rule_configured(rule.name, state.timing.period(time.time()))
        return state

    def _spawn(self, state: RuleState) -> None:
        assert self._group is not None
        name = state.rule.name
        task = self._group.create_task(
            self._loop(state), name=f"rule {name}", context=log_context(rule=name)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _loop(self, state: RuleState) -> None:
        try:
            while not (self.stopping.is_set() or state.removed):
                queue = self.events.queue(state.rule.name)
                wanted = queue.cycle_delay()  # a delete, an overflow, the run endpoint
                # A schedule that came due is never skipped, however busy events keep the loop.
                overdue = state.next_run is not None and state.next_run <= time.time()
                if overdue or (wanted is not None and wanted <= 0):
                    async with self._turn(state.rule):
                        await self._run_rule(state)
                    continue
                if queue.items:
                    async with self._turn(state.rule):
                        await self._run_targets(state)
                    continue
                state.next_run = state.due(time.time())
                delay = state.next_run - time.time()
                if wanted is not None:
                    delay = min(delay, wanted)
                if delay > 0:
                    state.wake.clear()
                    with contextlib.suppress(TimeoutError):  # woken: events, reload or stop
                        await asyncio.wait_for(state.wake.wait(), delay)
        finally:
            if state.removed and state.rule.name not in self.states:
                self.metrics.rule_removed(state.rule.name)

    @contextlib.asynccontextmanager
    async def _turn(self, rule: Rule) -> AsyncIterator[None]:
        """One run of a rule at a time, across reloads too: a rule removed (or renamed: the
        same source, destination and tags) while it runs and added back waits for that run
        to end before its own starts."""
        keys = (f"name:{rule.name}", f"copy:{rule.source}>{rule.destination}>{rule.tags}")
        while (busy := next((self._busy[k] for k in keys if k in self._busy), None)) is not None:
            await busy.wait()
        done = asyncio.Event()
        for key in keys:
            self._busy[key] = done
        try:
            yield
        finally:
            for key in keys:
                if self._busy.get(key) is done:
                    del self._busy[key]
            done.set()

    async def _run_rule(self, state: RuleState) -> None:
        rule = state.rule
        waiting = self.events.queue(rule.name).take_cycle()  # events this cycle covers
        started = state.last_started = state.running_since = time.time()
        log.info("rule %s: run started", rule.name, extra={"rule": rule.name})
        try:
            result = await self._runner(
                self.config,
                [rule],
                events=self.metrics,
                observer=self.metrics,
                stop=self._stop_runs,
                shard=self.shard,
            )
            outcome = result.rules[0]
        except Exception as exc:  # a bug must not end the daemon: report it, retry next time
            log.exception("rule %s: run crashed", rule.name)
            outcome = RuleResult(rule.name, str(rule.source), str(rule.destination))
            outcome.rule_failed = True
            outcome.errors.append(f"internal error: {type(exc).__name__}: {exc}")
            outcome.duration_seconds = time.time() - started
            self.metrics.rule_finished(outcome)
        finally:
            state.running_since = None
        state.record(outcome, started)
        state.next_run = state.due(time.time())  # kept while events run, so it comes due
        self.events.settle_cycle(waiting, outcome)
        log.log(
            logging.INFO if outcome.result == "success" else logging.WARNING,
            "rule %s: %s in %.1fs: %d copied, %d up to date, %d failed",
            rule.name,
            outcome.result,
            outcome.duration_seconds,
            outcome.copied,
            outcome.up_to_date,
            outcome.failed,
            extra={"rule": rule.name, "result": outcome.result},
        )

    async def _run_targets(self, state: RuleState) -> None:
        """Copy the tags events named, through the runner (the executor every cycle uses)."""
        rule = state.rule
        taken = self.events.take(rule, state.last_result)
        if not taken:
            return
        result = None
        try:
            run = await self._runner(
                self.config,
                [rule],
                events=EventRunEvents(self.metrics),
                observer=self.metrics,
                stop=self._stop_runs,
                shard=self.shard,
                targets=targets_of(taken),
            )
            result = run.rules[0]
        except Exception:  # a bug must not end the daemon; the next cycle catches up
            log.exception("rule %s: event-triggered copy crashed", rule.name)
        self.events.settle(rule.name, taken, result)


async def serve(
    config_path: str,
    config: Config,
    host: str,
    port: int,
    grace: float,
    shard: Shard | None = None,
    index: BlobIndex | None = None,
    hangup_seen: Callable[[], bool] = lambda: False,
    api_token: str | None = None,
) -> None:
    """Run the daemon and its HTTP endpoints until SIGTERM/SIGINT; OSError if `port` is taken.

    `index` (the persistent content index) is shared by every run of the daemon; `api_token`
    enables ``POST /v1/rules/RULE/run``. `hangup_seen`: whether a SIGHUP came before the
    loop's handlers were in place (the CLI catches it from its first moment); the daemon then
    reloads once it runs."""
    metrics = Metrics(process=True, shard=shard)
    runner = functools.partial(run, index=index)
    daemon = Daemon(config_path, config, metrics, grace, shard or Shard(), runner=runner)
    app = make_app(daemon, metrics)
    add_routes(app, daemon.events, daemon, api_token)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
    loop.add_signal_handler(signal.SIGTERM, daemon.stop)
    loop.add_signal_handler(signal.SIGINT, daemon.stop)
    try:
        web_runner = await start(app, host, port)
    except BaseException:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        raise
    log.info("serving on http://%s:%d (%d rules)", host, port, len(config.rules))
    if hangup_seen():
        daemon.request_reload()
    try:
        await daemon.run()
    finally:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await web_runner.cleanup()
