"""The shared pool of GPU-resident data-generation actors, and the client that streams from it.

The pool is a set of named, detached actors ``<pool>-0 .. <pool>-(N-1)`` in the namespace
``datagen``: any job, in any (anonymous) namespace, finds them by name, and they outlive the job
that made them. Each actor holds a ``RecipeBook`` whose tables stay on its device, and serves
``batch(recipe, params, seed)``. A batch depends only on (recipe, params, seed), so

* any actor may serve any request, and a request retried on a restarted actor gives the same batch;
* actors are created with ``max_restarts=-1, max_task_retries=-1``: when one dies mid-stream Ray
  restarts it and re-runs its pending calls, and the client yields every seed exactly once, in
  order: nothing lost, nothing served twice;
* the client keeps a bounded number of requests in flight (``in_flight``), which is the
  backpressure: no queue grows without bound, on the actors or in the consumer.

One pool specification (``pool_spec``), derived from the cluster's resources, is what every job
and ``pool start`` create, so the pool holds the same resources whichever job made it and the jobs
can count on what is left (on a 2-CPU machine: 2 actors x 0.5 CPU, leaving 1 CPU for a training
worker or a Tune trial). No wait is unbounded: creating or finding the pool, and a job's own
resources (``wait_for_resources``), either succeed within ``wait_s`` or raise
``ResourcesUnavailable`` with one line saying what the pool holds, what the job asks for and what
the cluster has.

Idle actors exit (``idle_timeout_s``, default 10 minutes): a pool left behind by finished jobs
frees its CPUs and GPUs, so an autoscaled GPU node can idle out. A client that finds an actor gone
creates the pool again from its specification and re-sends the requests it had in flight.

Start, inspect and stop from the command line (``--address http://host:8265``, the dashboard
address, runs the command as a Ray job on the cluster):

    python -m ray_jobs.pool start
    python -m ray_jobs.pool inspect
    python -m ray_jobs.pool stop
"""

from __future__ import annotations

import argparse
import collections
import os
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import ray

from sevi.runtime.errors import InputError

NAMESPACE = "datagen"
DEFAULT_POOL = "gen"
DEFAULT_IDLE_TIMEOUT_S = 600.0  # a pool nobody asked for 10 minutes frees its node (cluster.yaml idles nodes out at 15)
DEFAULT_WAIT_S = 120.0  # how long a job waits for resources before it gives up with a reason
# Ray's metrics (ray.util.metrics): Prometheus prefixes each name with "ray_" (a counter also gets "_total").
METRIC_SERVED = "datagen_batches_served"  # counter, per actor and recipe
METRIC_GENERATION_S = "datagen_generation_seconds"  # histogram: time an actor spent making a batch
METRIC_WAIT_S = "datagen_consumer_wait_seconds"  # histogram: time a consumer was blocked on a batch
METRIC_TAGS = ("actor", "recipe")
SECONDS_BOUNDARIES = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
_metrics: dict = {}


def pool_metric(which: str):
    """This process's Ray metric ``which`` (one of the METRIC_* names), made once per process.
    They go wherever the cluster's metrics go: each node's metrics agent serves them to Prometheus
    (``ray start --metrics-export-port``, ``ray.init(_metrics_export_port=...)``) and the dashboard."""
    if which not in _metrics:
        from ray.util.metrics import Counter, Histogram

        if which == METRIC_SERVED:
            _metrics[which] = Counter(which, "batches the generator pool served", tag_keys=METRIC_TAGS)
        elif which == METRIC_GENERATION_S:
            _metrics[which] = Histogram(which, "seconds a pool actor spent generating one batch",
                                        boundaries=SECONDS_BOUNDARIES, tag_keys=METRIC_TAGS)
        elif which == METRIC_WAIT_S:
            _metrics[which] = Histogram(which, "seconds a consumer waited for one pool batch",
                                        boundaries=SECONDS_BOUNDARIES, tag_keys=METRIC_TAGS)
        else:
            raise ValueError(f"unknown pool metric {which!r}")
    return _metrics[which]


def record(which: str, value: float, tags: dict) -> None:
    """Count (``datagen_batches_served``) or observe (the seconds) one value of a pool metric; a
    process outside Ray (a unit test's fake pool) records nothing."""
    if not ray.is_initialized():
        return
    m = pool_metric(which)
    m.inc(value, tags=tags) if which == METRIC_SERVED else m.observe(value, tags=tags)


class ResourcesUnavailable(InputError):
    """A job's resources could not be had within its wait; the message is one line for the user,
    who can change it (ask for less, wait longer, stop the pool, add nodes): an InputError, so the
    command ends with it in one line and exit status 2 (``sevi.cli.policy``)."""


def connect(address: str, wait_s: float, job: str, **init_kwargs) -> None:
    """``ray.init(address=...)``, ended within ``wait_s`` with one line when no Ray cluster answers
    there. A ``host:port`` that refuses or does not accept a connection is named at once (a plain
    ``ray.init`` retried for minutes, past any ``--wait-s``); ``auto`` with no cluster running is
    Ray's own error, in one line. When the port accepts but no Ray answers within ``wait_s``, the
    process ends with that line and exit status 2 (Ray's connection cannot be interrupted)."""
    import socket
    import sys

    host, _, port = address.rpartition(":")
    if "://" not in address and host and port.isdigit():
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=max(0.1, wait_s)).close()
        except OSError as e:
            why = "connection refused" if isinstance(e, ConnectionRefusedError) else \
                "no answer" if isinstance(e, (socket.timeout, TimeoutError)) else (e.strerror or str(e))
            raise ConnectionError(f"{job}: --address {address}: no Ray cluster reachable there ({why}, waited at "
                                  f"most {wait_s:g} s); expected the head's GCS address HOST:PORT (ray start --head "
                                  f"prints it), or none to use RAY_ADDRESS or a local instance") from None
    line = (f"{job}: --address {address}: no Ray cluster answered within {wait_s:g} s (--wait-s); expected the "
            f"head's GCS address HOST:PORT")
    timer = threading.Timer(max(wait_s, 1.0), lambda: (print(line, file=sys.stderr, flush=True), os._exit(2)))
    timer.daemon = True
    timer.start()
    try:
        ray.init(address=address, **init_kwargs)
    except ConnectionError as e:
        raise ConnectionError(f"{job}: {e}") from None
    finally:
        timer.cancel()


@ray.remote
class GeneratorActor:
    """One pool member: a device, a recipe book, counters, and an idle timer that ends it."""

    def __init__(self, name: str, device: str = "auto", cpus: float = 0.0, gpus: float = 0.0,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S):
        import torch

        from ray_jobs.recipes import RecipeBook
        from sevi.runtime.device import pick_device

        self.name = name
        self.device = pick_device(device)
        self.book = RecipeBook(self.device)
        self.cpus, self.gpus = float(cpus), float(gpus)
        self.served = 0
        self.busy_s = 0.0
        self.started = time.time()
        self.restarts = int(os.environ.get("RAY_ACTOR_RESTART_COUNT", 0) or 0)
        self.torch_threads = torch.get_num_threads()
        self.idle_timeout_s = float(idle_timeout_s)
        self._active = 0  # calls in progress
        self._last = time.monotonic()  # end of the latest call
        if self.idle_timeout_s > 0:
            threading.Thread(target=self._idle_watch, daemon=True).start()

    def _idle_watch(self) -> None:
        # ray.kill(no_restart=True) on itself: the actor ends for good and its name is free, so the
        # next job's get_if_exists creates a fresh one. (os._exit would count as a crash and restart.)
        while True:
            time.sleep(min(5.0, max(0.05, self.idle_timeout_s / 4)))
            if self._active == 0 and time.monotonic() - self._last > self.idle_timeout_s:
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return

    def batch(self, recipe: str, params: dict, seed: int) -> dict:
        self._active += 1
        t0 = time.perf_counter()
        try:
            out = self.book(recipe, params, seed)
        finally:
            self._active -= 1
            self._last = time.monotonic()
        dt = time.perf_counter() - t0
        self.busy_s += dt
        self.served += 1
        tags = {"actor": self.name, "recipe": recipe}
        record(METRIC_SERVED, 1, tags)
        record(METRIC_GENERATION_S, dt, tags)
        return out

    def stats(self) -> dict:
        import torch

        self._last = time.monotonic()
        up = time.time() - self.started
        return {"name": self.name, "node": ray.get_runtime_context().get_node_id()[:12],
                "pid": os.getpid(), "device": str(self.device), "device_type": self.device.type,
                "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
                "cpus": self.cpus, "gpus": self.gpus, "idle_timeout_s": self.idle_timeout_s,
                "batches_served": self.served, "busy_s": round(self.busy_s, 3), "uptime_s": round(up, 1),
                "utilisation": round(self.busy_s / up, 3) if up else 0.0,
                "batches_per_s": round(self.served / self.busy_s, 2) if self.busy_s else 0.0,
                "recipes": self.book.built}

    def ping(self) -> str:
        self._last = time.monotonic()
        return self.name


@dataclass(frozen=True)
class PoolSpec:
    """How a pool is made. Build it with ``pool_spec(cluster_resources)``; a pool that exists
    already is reused as it is (unless it renders on the wrong device, see ``ensure_pool``)."""

    name: str = DEFAULT_POOL
    actors: int = 2  # generator actors
    gpus_per_actor: float = 0.0  # fractional GPUs each (e.g. 0.25: four actors share a GPU); 0 on CPU
    cpus_per_actor: float = 0.5
    device: str = "auto"  # what each actor renders on: auto = its GPU if it has one
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S  # an actor with no request for this long exits; 0 = never

    def holds(self) -> dict[str, float]:
        return {"CPU": self.actors * self.cpus_per_actor, "GPU": self.actors * self.gpus_per_actor}


def pool_spec(resources: dict, name: str = DEFAULT_POOL, actors: int | None = None,
              gpus_per_actor: float | None = None, cpus_per_actor: float | None = None,
              idle_timeout_s: float | None = None, device: str = "auto") -> PoolSpec:
    """The one pool specification, from the cluster's resources (``ray.cluster_resources()``).

    GPU cluster: one actor per GPU, 0.25 GPU and 1 CPU each; a training worker beside it takes the
    other 0.75 of the GPU (``ray_jobs.sevi_train.worker_resources``). CPU cluster: two actors of
    0.5 CPU each (one torch thread each), which fed a 2-core laptop's trainer 1.2x faster than
    generating in-process (BENCHMARKS.md) and leaves 1 of 2 CPUs for a training worker or a trial.
    Explicit arguments override the defaults.
    """
    gpus = float(resources.get("GPU", 0) or 0)
    if gpus > 0:
        d_actors, d_gpus, d_cpus = max(1, int(gpus)), 0.25, 1.0
    else:
        d_actors, d_gpus, d_cpus = 2, 0.0, 0.5
    spec = PoolSpec(name=name, actors=actors or d_actors,
                    gpus_per_actor=d_gpus if gpus_per_actor is None else float(gpus_per_actor),
                    cpus_per_actor=d_cpus if cpus_per_actor is None else float(cpus_per_actor),
                    device=device,
                    idle_timeout_s=DEFAULT_IDLE_TIMEOUT_S if idle_timeout_s is None else float(idle_timeout_s))
    if spec.actors < 1 or spec.cpus_per_actor < 0 or spec.gpus_per_actor < 0:
        raise ValueError(f"pool {name!r}: actors must be >= 1 and resources >= 0, got {spec}")
    return spec


def actor_name(pool: str, i: int) -> str:
    return f"{pool}-{i}"


def _index(pool: str, name: str) -> int | None:
    prefix = f"{pool}-"
    if name.startswith(prefix) and name[len(prefix):].isdigit():
        return int(name[len(prefix):])
    return None


def get_or_create_pool(spec: PoolSpec = PoolSpec(), timeout_s: float | None = None) -> list:
    """Handles of the pool's actors ``0 .. spec.actors - 1``, creating any that are missing
    (idempotent across jobs). Waits at most ``timeout_s`` (None: forever) for them to answer; on
    a timeout the actors that did not answer are removed and ResourcesUnavailable is raised."""
    handles = []
    for i in range(spec.actors):
        handles.append(GeneratorActor.options(
            name=actor_name(spec.name, i), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
            max_restarts=-1, max_task_retries=-1, num_cpus=spec.cpus_per_actor, num_gpus=spec.gpus_per_actor,
        ).remote(actor_name(spec.name, i), spec.device, spec.cpus_per_actor, spec.gpus_per_actor,
                 spec.idle_timeout_s))
    pings = [h.ping.remote() for h in handles]
    ready, _ = ray.wait(pings, num_returns=len(pings), timeout=timeout_s)
    if len(ready) < len(pings):
        for h, ref in zip(handles, pings):
            if ref not in ready:  # still waiting for resources: do not let it take them later
                ray.kill(h, no_restart=True)
        raise ResourcesUnavailable(
            f"pool '{spec.name}': {len(pings) - len(ready)} of {spec.actors} actors could not start within "
            f"{timeout_s:.0f} s; each asks for {_fmt({'CPU': spec.cpus_per_actor, 'GPU': spec.gpus_per_actor})}; "
            f"the cluster has {_fmt(ray.cluster_resources())} (free now {_fmt(ray.available_resources())})")
    ray.get(pings)
    return handles


def find_pool(name: str = DEFAULT_POOL) -> list:
    """Handles of an existing pool's actors, in index order; empty if there is none."""
    found = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry.get("namespace") == NAMESPACE and (i := _index(name, entry.get("name", ""))) is not None:
            found.append(i)
    handles = []
    for i in sorted(found):
        try:
            handles.append(ray.get_actor(actor_name(name, i), namespace=NAMESPACE))
        except ValueError:  # exited between the listing and the lookup (idle timeout)
            pass
    return handles


def pool_stats(handles, timeout_s: float | None = None) -> list[dict]:
    return ray.get([h.stats.remote() for h in handles], timeout=timeout_s)


def stop_pool(name: str = DEFAULT_POOL) -> int:
    """Kill the pool's actors for good (no restart). Returns how many were stopped."""
    handles = find_pool(name)
    for h in handles:
        ray.kill(h, no_restart=True)
    return len(handles)


def held(stats: list[dict]) -> dict[str, float]:
    """What a pool's actors hold in all, from ``pool_stats``."""
    return {"CPU": sum(s.get("cpus", 0.0) for s in stats), "GPU": sum(s.get("gpus", 0.0) for s in stats)}


def ensure_pool(spec: PoolSpec, wait_s: float = DEFAULT_WAIT_S, log=print) -> list[dict]:
    """Make sure the pool exists and renders on the device the spec asks for; returns its stats.

    A pool on the wrong device (CPU actors made before the GPU nodes joined, while this spec wants
    GPUs) is replaced: its clients find their actors gone and reconnect to the new ones. Bounded
    by ``wait_s``; raises ResourcesUnavailable.
    """
    want = "cuda" if spec.gpus_per_actor > 0 else "cpu"
    existing = find_pool(spec.name)
    if existing:
        try:
            stats = pool_stats(existing, timeout_s=wait_s)
        except ray.exceptions.GetTimeoutError:
            raise ResourcesUnavailable(f"pool '{spec.name}' exists but its actors did not answer within {wait_s:.0f} s "
                                       f"(waiting for resources?); the cluster has {_fmt(ray.cluster_resources())}")
        except ray.exceptions.RayActorError:
            stats = None  # one exited (idle timeout) while we asked: create it again below
        if stats is not None and spec.device == "auto" and any(s["device_type"] != want for s in stats):
            devices = sorted({s["device"] for s in stats})
            log(f"pool '{spec.name}': replacing actors on {', '.join(devices)} with actors on {want} "
                f"({spec.actors} x {_fmt({'CPU': spec.cpus_per_actor, 'GPU': spec.gpus_per_actor})})")
            stop_pool(spec.name)
    return pool_stats(get_or_create_pool(spec, timeout_s=wait_s), timeout_s=wait_s)


def _fmt(res: dict) -> str:
    keep = {k: round(float(v), 3) for k, v in res.items() if k in ("CPU", "GPU") and (v or k == "CPU")}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in keep.items()) + "}"


def shortage(job: str, asks: list[dict], pool: str, stats: list[dict], waited_s: float) -> str:
    """The one line a job prints when its resources could not be had."""
    total: dict[str, float] = {}
    for b in asks:
        for k, v in b.items():
            total[k] = total.get(k, 0.0) + v
    kinds = collections.Counter(_fmt(b) for b in asks)
    ask = " + ".join(f"{n} x {b}" for b, n in kinds.items())
    return (f"{job}: could not get its resources within {waited_s:.0f} s: it asks for {ask}; pool '{pool}' holds "
            f"{len(stats)} actors = {_fmt(held(stats))}; the cluster has {_fmt(ray.cluster_resources())}, "
            f"free now {_fmt(ray.available_resources())}. Wait for other jobs, stop the pool "
            f"(python -m ray_jobs.pool stop), ask for less, or add nodes")


def wait_for_resources(bundles: list[dict], timeout_s: float, strategy: str = "PACK") -> bool:
    """Whether ``bundles`` could be reserved together within ``timeout_s`` (the reservation is
    released at once: it is a probe that bounds the wait, and asks the autoscaler for nodes)."""
    from ray.util.placement_group import placement_group, remove_placement_group

    bundles = [{k: v for k, v in b.items() if v} for b in bundles]
    if not bundles:
        return True
    pg = placement_group(bundles, strategy=strategy)
    try:
        ready, _ = ray.wait([pg.ready()], timeout=max(0.0, timeout_s))
        return bool(ready)
    finally:
        remove_placement_group(pg)


class PoolClient:
    """Streams batches from a pool in seed order with a bounded number of requests in flight.

    ``stream(recipe, params, seeds)`` sends request k to actor k mod N, keeps ``in_flight``
    requests outstanding, and yields (seed, batch, wait_s) in the order of ``seeds``; wait_s is
    how long the consumer waited for that batch (0 when it was already there; also observed in
    Ray's metric ``datagen_consumer_wait_seconds`` per actor and recipe). A client made with
    ``connect(spec)`` survives actors that exited (idle timeout, ``pool stop``): it creates the
    pool again from the spec and re-sends what it had in flight.
    """

    def __init__(self, handles, in_flight: int = 4, spec: PoolSpec | None = None, timeout_s: float | None = None,
                 names: list[str] | None = None):
        if not handles:
            raise ValueError("the pool has no actors; start it with `python -m ray_jobs.pool start`")
        if in_flight < 1:
            raise ValueError("in_flight must be >= 1")
        self.handles = list(handles)
        self.in_flight = in_flight
        self.spec = spec
        self.timeout_s = timeout_s
        self.reconnects = 0
        self._names = names

    def actor_of(self, k: int) -> str:
        """The name of the actor request k goes to (metric tag): the pool's own names by index."""
        i = k % len(self.handles)
        if self._names and len(self._names) == len(self.handles):
            return self._names[i]
        return actor_name(self.spec.name, i) if self.spec is not None else f"actor-{i}"

    @classmethod
    def connect(cls, spec: PoolSpec = PoolSpec(), in_flight: int = 4, timeout_s: float | None = DEFAULT_WAIT_S
                ) -> "PoolClient":
        return cls(get_or_create_pool(spec, timeout_s=timeout_s), in_flight, spec, timeout_s)

    def _reconnect(self, error: Exception) -> None:
        if self.spec is None or self.reconnects >= 100:
            raise error
        self.reconnects += 1
        self.handles = get_or_create_pool(self.spec, timeout_s=self.timeout_s)

    def stream(self, recipe: str, params: dict, seeds: Iterable[int]) -> Iterator[tuple[int, dict, float]]:
        pending: collections.deque = collections.deque()
        seeds = iter(seeds)
        k = 0

        def send(seed: int):
            nonlocal k
            handle, actor = self.handles[k % len(self.handles)], self.actor_of(k)
            k += 1
            return handle.batch.remote(recipe, params, seed), actor

        def submit() -> bool:
            seed = next(seeds, None)
            if seed is None:
                return False
            pending.append((seed, *send(seed)))
            return True

        while len(pending) < self.in_flight and submit():
            pass
        while pending:
            seed, ref, actor = pending[0]
            t0 = time.perf_counter()
            try:
                batch = ray.get(ref)
            except ray.exceptions.RayActorError as e:  # the actor exited for good: new pool, same seeds
                self._reconnect(e)
                resend = [s for s, _, _ in pending]
                pending.clear()
                pending.extend((s, *send(s)) for s in resend)
                continue
            pending.popleft()
            wait = time.perf_counter() - t0
            record(METRIC_WAIT_S, wait, {"actor": actor, "recipe": recipe})
            submit()
            yield seed, batch, wait

    def batch(self, recipe: str, params: dict, seed: int) -> dict:
        """One batch (no pipelining): for validation sets and tests."""
        while True:
            t0 = time.perf_counter()
            try:
                out = ray.get(self.handles[seed % len(self.handles)].batch.remote(recipe, params, seed))
            except ray.exceptions.RayActorError as e:
                self._reconnect(e)
                continue
            record(METRIC_WAIT_S, time.perf_counter() - t0, {"actor": self.actor_of(seed), "recipe": recipe})
            return out


# -- command line --------------------------------------------------------------------------------
def _print_stats(stats: list[dict]) -> None:
    if not stats:
        print("no pool actors found")
        return
    cols = ["name", "node", "pid", "device_name", "cpus", "gpus", "batches_served", "batches_per_s", "utilisation",
            "uptime_s", "recipes"]
    print("  ".join(f"{c:>14}" for c in cols))
    for s in stats:
        print("  ".join(f"{str(s[c]):>14}" for c in cols))


def job_entrypoint(argv: list[str]) -> str:
    """The command that runs this CLI as a Ray job on the cluster (the address is the cluster's own)."""
    import shlex

    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
            continue
        if tok == "--address":
            skip = True
            continue
        if tok.startswith("--address="):
            continue
        out.append(tok)
    return "python -m ray_jobs.pool " + " ".join(shlex.quote(t) for t in out)


def run_as_job(address: str, argv: list[str], timeout_s: float = 300.0) -> int:
    """``http://host:8265`` is the dashboard / job API, which a driver cannot connect to: run the
    same command as a job there (the project is installed on every node) and print its output."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    job_id = client.submit_job(entrypoint=job_entrypoint(argv))
    deadline = time.monotonic() + timeout_s
    status = client.get_job_status(job_id)
    while status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) and time.monotonic() < deadline:
        time.sleep(1.0)
        status = client.get_job_status(job_id)
    print(client.get_job_logs(job_id), end="")
    if status != JobStatus.SUCCEEDED:
        print(f"pool: job {job_id} ended {status} (or was still running after {timeout_s:.0f} s)")
        return 1
    return 0


def main(argv=None) -> int:
    """``python -m ray_jobs.pool start|inspect|stop``, under the project's one error policy
    (``sevi.cli.policy``): a bad option, no cluster, an address where no Ray answers within
    ``--wait-s``: one line, exit status 2."""
    import sys

    from sevi.cli.policy import run_command

    exiting = argv is None  # a process entry point: sevi.cli.policy.run_command
    argv = list(sys.argv[1:] if argv is None else argv)
    action = next((a for a in argv if a in ("start", "inspect", "stop")), None)
    return run_command("pool", action, lambda: _main(argv), debug="--debug" in argv, exiting=exiting)


def _main(argv: list[str]) -> int:
    import math

    ap = argparse.ArgumentParser(prog="python -m ray_jobs.pool", description="start, inspect or stop the generator pool")
    ap.add_argument("action", choices=["start", "inspect", "stop"])
    ap.add_argument("--name", default=DEFAULT_POOL)
    ap.add_argument("--actors", type=int, default=None, help="default: one per GPU, or 2 on a CPU cluster")
    ap.add_argument("--gpus-per-actor", type=float, default=None, help="default: 0.25 where the cluster has GPUs, else 0")
    ap.add_argument("--cpus-per-actor", type=float, default=None, help="default: 1 on a GPU cluster, else 0.5")
    ap.add_argument("--idle-timeout-s", type=float, default=None,
                    help=f"an actor with no request for this long exits (default {DEFAULT_IDLE_TIMEOUT_S:.0f}; 0: never)")
    ap.add_argument("--wait-s", type=float, default=DEFAULT_WAIT_S, help="longest wait for the actors to start")
    ap.add_argument("--address", default=None,
                    help="Ray address (default: RAY_ADDRESS or a running local cluster); an http:// dashboard "
                         "address runs this command as a Ray job there")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    a = ap.parse_args(argv)
    for bad, text in (
        (not (a.wait_s >= 0 and math.isfinite(a.wait_s)), f"--wait-s: got {a.wait_s}; expected a finite number "
                                                          f"of seconds >= 0"),
        (a.actors is not None and a.actors < 1, f"--actors: got {a.actors}; expected >= 1"),
        (a.gpus_per_actor is not None and not a.gpus_per_actor >= 0, f"--gpus-per-actor: got {a.gpus_per_actor}; "
                                                                      f"expected >= 0"),
        (a.cpus_per_actor is not None and not a.cpus_per_actor >= 0, f"--cpus-per-actor: got {a.cpus_per_actor}; "
                                                                      f"expected >= 0"),
        (a.idle_timeout_s is not None and not (a.idle_timeout_s >= 0 and math.isfinite(a.idle_timeout_s)),
         f"--idle-timeout-s: got {a.idle_timeout_s}; expected a finite number of seconds >= 0 (0: never)"),
        (not a.name or "/" in a.name, f"--name: got {a.name!r}; expected a pool name"),
    ):
        if bad:
            raise InputError(text)
    address = a.address or os.environ.get("RAY_ADDRESS") or "auto"
    if address.startswith(("http://", "https://")):
        return run_as_job(address, argv, timeout_s=max(300.0, a.wait_s + 60))
    try:
        connect(address, a.wait_s, f"pool {a.action}", namespace=NAMESPACE, log_to_driver=False)
    except ConnectionError:
        if address != "auto":
            raise
        raise ConnectionError("no running Ray cluster found (RAY_ADDRESS is not set and none runs on this "
                              "machine); start one (ray start --head) or give --address HOST:PORT") from None
    if a.action == "start":
        spec = pool_spec(ray.cluster_resources(), a.name, a.actors, a.gpus_per_actor, a.cpus_per_actor,
                         a.idle_timeout_s)
        _print_stats(ensure_pool(spec, a.wait_s))
    elif a.action == "inspect":
        _print_stats(pool_stats(find_pool(a.name), timeout_s=a.wait_s))
    else:
        print(f"stopped {stop_pool(a.name)} actors of pool '{a.name}'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
