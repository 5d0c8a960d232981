"""The cohort on Ray: one actor per GPU (or per group of CPU cores), each loads the ensemble once.

Scheduling is Ray's: each actor reserves ``num_gpus=1`` (GPU nodes) or ``num_cpus=cpus_per_worker``
(CPU-only nodes) and Ray places it on a node with room. The driver keeps one case in flight per
actor and hands the next case to whichever actor finishes first, so fast and slow workers (mixed
GPU types, big and small cases) stay busy.

Failures:
- A bad case is an ``error`` row returned by the worker (see worker.py); nothing is retried.
- A worker process that dies (SIGKILL, the kernel's OOM killer, a segfault, a lost node) fails the
  case it was running with a RayActorError. Ray restarts the actor (``max_restarts``; the new process
  loads the ensemble again) and the driver puts the case back at the front of the queue, at most
  ``max_retries`` times; then the case is a ``worker-died`` row and the cohort goes on. An actor that
  Ray reports dead for good is replaced by a new one (bounded too), so one lost node does not stall
  the cohort.
- A worker that cannot load the ensemble (bad config, bad model) stops the cohort at once with the
  worker's one-line error: no case could succeed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Sequence

from pantherseg.cohort.cases import Case
from pantherseg.cohort.progress import CohortProgress
from pantherseg.cohort.report import CaseRow
from pantherseg.cohort.worker import CaseWorker, CohortSettings, raise_load_error
from pantherseg.errors import ResourceError, one_line

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'pantherseg[ray]' (ray==2.60.0, see requirements-extras.txt)"
DEFAULT_CPUS_PER_WORKER = 4  # threads per CPU worker: large enough for one case, small enough to share a node
RESTART_PROBE_S = 1.0  # how often a restarting worker is asked whether it is back
WAIT_LOG_S = 60.0  # log a line while no worker has started (waiting for a node with room, or an autoscaler)


@dataclass
class RayOptions:
    address: str | None = None  # None: start a local Ray instance; "auto", "ray://host:10001": an existing cluster
    workers: int | None = None  # None: one per GPU, else cluster CPUs // cpus_per_worker
    cpus_per_worker: float | None = None  # None: CPU nodes DEFAULT_CPUS_PER_WORKER, GPU nodes CPUs per GPU worker
    # 0.5: two workers share a GPU, so one's reading/preprocessing/export overlaps the other's network.
    gpus_per_worker: float = 1.0
    max_retries: int = 2  # times a case is retried after its worker died


@dataclass
class _Slot:
    actor: object
    worker: str | None = None
    replacements: int = 0  # new actors this slot was given
    deaths: int = 0  # times its current actor died (Ray restarts it max_restarts times)


@dataclass
class _Plan:
    workers: int
    actor_options: dict = field(default_factory=dict)
    settings: CohortSettings | None = None


def run_ray(
    cases: Sequence[Case], settings: CohortSettings, options: RayOptions, progress: CohortProgress, rows: list[CaseRow]
) -> tuple[list[dict], int]:
    """Appends a row per case to ``rows`` as each finishes (kept if interrupted); returns the workers'
    descriptions and the number of worker deaths."""
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=options.address, include_dashboard=False, logging_level=logging.WARNING)
    actors = []
    try:
        plan = plan_workers(ray.cluster_resources(), _largest_node(ray), settings, options, len(cases))
        log.info("Ray: %d worker(s), each %s", plan.workers, plan.actor_options)
        remote_class = ray.remote(CaseWorker)

        def new_actor():
            actor = remote_class.options(**plan.actor_options).remote(plan.settings)
            actors.append(actor)
            return actor

        return _Dispatcher(
            ray, [_Slot(new_actor()) for _ in range(plan.workers)], new_actor, cases, options, progress, rows
        ).run()
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if started_here:
            ray.shutdown()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ResourceError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}.") from None
    return ray


def _largest_node(ray) -> dict:
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    return {
        "CPU": max((n.get("CPU", 0) for n in nodes), default=0),
        "GPU": max((n.get("GPU", 0) for n in nodes), default=0),
    }


def plan_workers(cluster: dict, largest_node: dict, settings: CohortSettings, options: RayOptions, cases: int) -> _Plan:
    """How many actors, with which resources; ResourceError if one actor fits on no node."""
    gpus, cpus = int(cluster.get("GPU", 0)), float(cluster.get("CPU", 0))
    use_gpu = gpus > 0 and settings.options.device != "cpu"
    if not 0 < options.gpus_per_worker <= 1:
        raise ResourceError(f"--ray-gpus-per-worker must be in (0, 1], found {options.gpus_per_worker}.")
    if use_gpu:
        workers = options.workers or max(1, int(gpus / options.gpus_per_worker))
        per_worker_cpus = options.cpus_per_worker or max(1.0, float(int(cpus // workers)))
        actor_options = {"num_gpus": options.gpus_per_worker, "num_cpus": per_worker_cpus}
        # Ray gives each actor its own GPU as cuda:0 (CUDA_VISIBLE_DEVICES).
        settings = dataclasses.replace(settings, options=settings.options.but(device="cuda"))
    else:
        per_worker_cpus = options.cpus_per_worker or float(min(DEFAULT_CPUS_PER_WORKER, max(1, int(cpus))))
        workers = options.workers or max(1, int(cpus // per_worker_cpus))
        actor_options = {"num_cpus": per_worker_cpus}
        settings = dataclasses.replace(settings, options=settings.options.but(cpu_threads=max(1, int(per_worker_cpus))))
    if per_worker_cpus > largest_node.get("CPU", 0) or (
        use_gpu and largest_node.get("GPU", 0) < options.gpus_per_worker
    ):
        raise ResourceError(
            f"A Ray worker needs {actor_options} but the largest node has {largest_node}; lower --ray-cpus-per-worker."
        )
    actor_options.update(max_restarts=options.max_retries + 1, max_task_retries=0)
    settings = dataclasses.replace(settings, log_level=logging.WARNING)
    return _Plan(workers=max(1, min(workers, cases)), actor_options=actor_options, settings=settings)


class _Dispatcher:
    """Hands out cases until every one has a row; one case (or one ready() probe) in flight per slot.

    A slot whose actor died is not given cases while Ray restarts it (calls to a restarting actor fail at
    once): it is probed with ready() every RESTART_PROBE_S until the new process has loaded the ensemble,
    and only then gets the next case. Ray's failures are told apart by their type: ``ActorUnavailableError``
    (the actor may come back), ``ActorDiedError`` (Ray restarts it while it has restarts left, counted
    here; after that it is dead for good and a new actor takes the slot, within bounds), an actor whose
    constructor raised (the ensemble cannot load: the cohort stops), and ``RayTaskError`` (a bug in
    process(): that case's row).
    """

    def __init__(
        self,
        ray,
        slots: list[_Slot],
        new_actor,
        cases: Sequence[Case],
        options: RayOptions,
        progress: CohortProgress,
        rows: list[CaseRow],
    ):
        self.ray, self.new_actor, self.options, self.progress, self.rows = ray, new_actor, options, progress, rows
        self.queue = deque(cases)
        self.attempts: Counter = Counter()
        self.pending: dict = {}  # ObjectRef -> (slot, case); case None for a slot's ready() probe
        self.resting: list[tuple[float, _Slot]] = []  # (time to probe again, slot) while Ray restarts the actor
        self.infos: list[dict] = []
        self.deaths = 0
        for slot in slots:
            self.probe(slot)

    def run(self) -> tuple[list[dict], int]:
        """Returns the workers' descriptions and the number of worker deaths."""
        while self.queue or any(case is not None for _, case in self.pending.values()):
            if not self.pending and not self.resting:
                while self.queue:
                    case = self.queue.popleft()
                    self.finish(
                        CaseRow(
                            name=case.name,
                            input=str(case.path),
                            status="worker-died",
                            attempts=0,
                            error="no Ray worker left (each died repeatedly)",
                        )
                    )
                break
            self.wake_rested()
            timeout = min([WAIT_LOG_S, *(max(0.0, t - time.monotonic()) for t, _ in self.resting)])
            if not self.pending:
                time.sleep(timeout)
                continue
            done, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
            if not done:
                if not self.infos and not self.resting:
                    log.warning("Waiting for Ray workers to start (a node with the resources asked for)...")
                continue
            self.collect(done[0])
        return self.infos, self.deaths

    def dispatch(self, slot: _Slot) -> None:
        if self.queue:
            case = self.queue.popleft()
            self.pending[slot.actor.process.remote(case)] = (slot, case)
            self.progress.case_started(case, slot.worker)

    def probe(self, slot: _Slot) -> None:
        self.pending[slot.actor.ready.remote()] = (slot, None)

    def wake_rested(self) -> None:
        now = time.monotonic()
        for entry in [e for e in self.resting if e[0] <= now]:
            self.resting.remove(entry)
            self.probe(entry[1])

    def collect(self, ref) -> None:
        from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

        slot, case = self.pending.pop(ref)
        try:
            value = self.ray.get(ref)
        except RayActorError as error:
            if error.actor_init_failed:  # the constructor raised: every replacement would too
                raise ResourceError(f"A Ray worker could not load the ensemble: {_init_error(error)}") from error
            if case is not None:
                self.case_failed(case, slot, error)
            if isinstance(error, ActorDiedError):  # not ActorUnavailableError: that one may come back as it is
                slot.deaths += 1
                if slot.deaths > self.options.max_retries + 1:  # Ray's restarts used up: dead for good
                    self.replace(slot)
                    return
            self.resting.append((time.monotonic() + RESTART_PROBE_S, slot))
            return
        except RayTaskError as error:  # process() reports bad cases itself; this is a bug, reported
            value = CaseRow(
                name=case.name,
                input=str(case.path),
                status="error",
                worker=slot.worker,
                error=f"unexpected error in the worker: {one_line(str(error))}",
            )
        if case is None:
            if "error" in value:
                raise_load_error(value["error"])
            if value["worker"] not in {info["worker"] for info in self.infos}:
                self.infos.append(value)
            slot.worker = value["worker"]
        else:
            value.attempts = self.attempts[case.name] + 1
            self.finish(value)
        self.dispatch(slot)

    def case_failed(self, case: Case, slot: _Slot, error: Exception) -> None:
        """The worker died under ``case``: back to the front of the queue, or a worker-died row."""
        self.deaths += 1
        reason = _death_reason(error)
        self.attempts[case.name] += 1
        tries = self.attempts[case.name]
        if tries <= self.options.max_retries:
            self.progress.case_retried(case, slot.worker, tries + 1, reason)
            self.queue.appendleft(case)
            return
        self.finish(
            CaseRow(
                name=case.name,
                input=str(case.path),
                status="worker-died",
                worker=slot.worker,
                attempts=tries,
                error=f"the worker died on each of {tries} attempts ({reason})",
            )
        )

    def finish(self, row: CaseRow) -> None:
        self.rows.append(row)
        self.progress.case_finished(row)

    def replace(self, slot: _Slot) -> None:
        """A new actor for a slot whose actor is dead for good (restarts used up, node lost), within bounds."""
        if slot.replacements >= self.options.max_retries + 1:
            log.error("Ray worker %s died too often; not replaced again", slot.worker)
            return
        slot.actor, slot.replacements, slot.deaths = self.new_actor(), slot.replacements + 1, 0
        self.probe(slot)


def _init_error(error: Exception) -> str:
    """The last line of the constructor's traceback (``RuntimeError: ...``), not Ray's preamble."""
    return one_line(str(error), last=True, default=type(error).__name__)


def _death_reason(error: Exception) -> str:
    text = str(error)
    for marker in ("Worker exit detail:", "The actor is dead because", "The actor"):
        if marker in text:
            return one_line(text[text.index(marker) :])[:200]
    return type(error).__name__
