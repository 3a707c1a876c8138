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

Start, inspect and stop from the command line:

    python -m ray_jobs.pool start --actors 4 --gpus-per-actor 0.25
    python -m ray_jobs.pool inspect
    python -m ray_jobs.pool stop
"""

from __future__ import annotations

import argparse
import collections
import os
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import ray

NAMESPACE = "datagen"
DEFAULT_POOL = "gen"


@ray.remote
class GeneratorActor:
    """One pool member: a device, a recipe book, counters."""

    def __init__(self, name: str, device: str = "auto"):
        import torch

        from ray_jobs.recipes import RecipeBook
        from sevi.generator import pick_device

        self.name = name
        self.device = pick_device(device)
        self.book = RecipeBook(self.device)
        self.served = 0
        self.busy_s = 0.0
        self.started = time.time()
        self.restarts = int(os.environ.get("RAY_ACTOR_RESTART_COUNT", 0) or 0)
        self.torch_threads = torch.get_num_threads()

    def batch(self, recipe: str, params: dict, seed: int) -> dict:
        t0 = time.perf_counter()
        out = self.book(recipe, params, seed)
        self.busy_s += time.perf_counter() - t0
        self.served += 1
        return out

    def stats(self) -> dict:
        import torch

        up = time.time() - self.started
        return {"name": self.name, "node": ray.get_runtime_context().get_node_id()[:12],
                "pid": os.getpid(), "device": str(self.device),
                "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
                "batches_served": self.served, "busy_s": round(self.busy_s, 3), "uptime_s": round(up, 1),
                "utilisation": round(self.busy_s / up, 3) if up else 0.0,
                "batches_per_s": round(self.served / self.busy_s, 2) if self.busy_s else 0.0,
                "recipes": self.book.built}

    def ping(self) -> str:
        return self.name


@dataclass(frozen=True)
class PoolSpec:
    """How a pool is made. A pool that exists already is reused as it is."""

    name: str = DEFAULT_POOL
    actors: int = 2  # generator actors
    gpus_per_actor: float = 0.0  # fractional GPUs each (e.g. 0.25: four actors share a GPU); 0 on CPU
    cpus_per_actor: float = 1.0
    device: str = "auto"  # what each actor renders on: auto = its GPU if it has one


def actor_name(pool: str, i: int) -> str:
    return f"{pool}-{i}"


def get_or_create_pool(spec: PoolSpec = PoolSpec()) -> list:
    """Handles of the pool's actors, creating any that are missing (idempotent across jobs)."""
    handles = []
    for i in range(spec.actors):
        handles.append(GeneratorActor.options(
            name=actor_name(spec.name, i), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
            max_restarts=-1, max_task_retries=-1, num_cpus=spec.cpus_per_actor, num_gpus=spec.gpus_per_actor,
        ).remote(actor_name(spec.name, i), spec.device))
    ray.get([h.ping.remote() for h in handles])
    return handles


def find_pool(name: str = DEFAULT_POOL) -> list:
    """Handles of an existing pool's actors, in index order; empty if there is none."""
    handles, i = [], 0
    while True:
        try:
            handles.append(ray.get_actor(actor_name(name, i), namespace=NAMESPACE))
        except ValueError:
            return handles
        i += 1


def pool_stats(handles) -> list[dict]:
    return ray.get([h.stats.remote() for h in handles])


def stop_pool(name: str = DEFAULT_POOL) -> int:
    """Kill the pool's actors for good (no restart). Returns how many were stopped."""
    handles = find_pool(name)
    for h in handles:
        ray.kill(h, no_restart=True)
    return len(handles)


class PoolClient:
    """Streams batches from a pool in seed order with a bounded number of requests in flight.

    ``stream(recipe, params, seeds)`` sends request k to actor k mod N, keeps ``in_flight``
    requests outstanding, and yields (seed, batch, wait_s) in the order of ``seeds``; wait_s is
    how long the consumer waited for that batch (0 when it was already there).
    """

    def __init__(self, handles, in_flight: int = 4):
        if not handles:
            raise ValueError("the pool has no actors; start it with `python -m ray_jobs.pool start`")
        if in_flight < 1:
            raise ValueError("in_flight must be >= 1")
        self.handles = list(handles)
        self.in_flight = in_flight

    @classmethod
    def connect(cls, spec: PoolSpec = PoolSpec(), in_flight: int = 4) -> "PoolClient":
        return cls(get_or_create_pool(spec), in_flight)

    def stream(self, recipe: str, params: dict, seeds: Iterable[int]) -> Iterator[tuple[int, dict, float]]:
        pending: collections.deque = collections.deque()
        seeds = iter(seeds)
        k = 0

        def submit() -> bool:
            nonlocal k
            seed = next(seeds, None)
            if seed is None:
                return False
            handle = self.handles[k % len(self.handles)]
            pending.append((seed, handle.batch.remote(recipe, params, seed)))
            k += 1
            return True

        while len(pending) < self.in_flight and submit():
            pass
        while pending:
            seed, ref = pending.popleft()
            t0 = time.perf_counter()
            batch = ray.get(ref)
            wait = time.perf_counter() - t0
            submit()
            yield seed, batch, wait

    def batch(self, recipe: str, params: dict, seed: int) -> dict:
        """One batch (no pipelining): for validation sets and tests."""
        return ray.get(self.handles[seed % len(self.handles)].batch.remote(recipe, params, seed))


# -- command line --------------------------------------------------------------------------------
def _print_stats(stats: list[dict]) -> None:
    if not stats:
        print("no pool actors found")
        return
    cols = ["name", "node", "device_name", "batches_served", "batches_per_s", "utilisation", "uptime_s", "recipes"]
    print("  ".join(f"{c:>14}" for c in cols))
    for s in stats:
        print("  ".join(f"{str(s[c]):>14}" for c in cols))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ray_jobs.pool", description="start, inspect or stop the generator pool")
    ap.add_argument("action", choices=["start", "inspect", "stop"])
    ap.add_argument("--name", default=DEFAULT_POOL)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--gpus-per-actor", type=float, default=None, help="default: 0.25 where the cluster has GPUs, else 0")
    ap.add_argument("--cpus-per-actor", type=float, default=1.0)
    ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a running local cluster)")
    a = ap.parse_args(argv)
    ray.init(address=a.address or os.environ.get("RAY_ADDRESS") or "auto", namespace=NAMESPACE, log_to_driver=False)
    if a.action == "start":
        gpus = a.gpus_per_actor
        if gpus is None:
            gpus = 0.25 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        get_or_create_pool(PoolSpec(a.name, a.actors, gpus, a.cpus_per_actor))
        _print_stats(pool_stats(find_pool(a.name)))
    elif a.action == "inspect":
        _print_stats(pool_stats(find_pool(a.name)))
    else:
        print(f"stopped {stop_pool(a.name)} actors of pool '{a.name}'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
