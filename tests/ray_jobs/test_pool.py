import os
import signal

import numpy as np
import ray
import torch

from ray_jobs.pool import PoolClient, PoolSpec, find_pool, get_or_create_pool, pool_stats
from ray_jobs.recipes import RecipeBook

PARAMS = {"grid": 32, "batch": 2, "electrons": 3000}


def test_identical_batches_for_identical_seeds_from_different_actors(pool_name):
    a, b = get_or_create_pool(PoolSpec(pool_name, actors=2, cpus_per_actor=0.5, device="cpu"))
    ba = ray.get(a.batch.remote("sevi-counts", PARAMS, 42))
    bb = ray.get(b.batch.remote("sevi-counts", PARAMS, 42))
    assert set(ba) == {"counts", "R", "sigma_R", "beta"}
    for k in ba:
        np.testing.assert_array_equal(ba[k], bb[k], err_msg=f"{k} differs between actors")
    other = ray.get(a.batch.remote("sevi-counts", PARAMS, 43))
    assert not np.array_equal(ba["counts"], other["counts"])
    # ... and equal to the same recipe run in this process, without Ray.
    local = RecipeBook(torch.device("cpu"))("sevi-counts", PARAMS, 42)
    np.testing.assert_array_equal(local["counts"], ba["counts"])


def test_pool_is_found_by_name_from_another_namespace(pool_name):
    get_or_create_pool(PoolSpec(pool_name, actors=2, cpus_per_actor=0.5, device="cpu"))
    again = get_or_create_pool(PoolSpec(pool_name, actors=2, cpus_per_actor=0.5, device="cpu"))
    assert len(find_pool(pool_name)) == 2 and len(again) == 2
    stats = pool_stats(again)
    assert [s["name"] for s in stats] == [f"{pool_name}-0", f"{pool_name}-1"]


def test_killing_an_actor_mid_stream_loses_and_duplicates_nothing(pool_name):
    handles = get_or_create_pool(PoolSpec(pool_name, actors=2, cpus_per_actor=0.5, device="cpu"))
    seeds = list(range(100, 116))
    reference = {s: RecipeBook(torch.device("cpu"))("sevi-counts", PARAMS, s)["counts"] for s in seeds}
    victim_pid = pool_stats(handles)[1]["pid"]
    got = []
    for i, (seed, batch, _) in enumerate(PoolClient(handles, in_flight=4).stream("sevi-counts", PARAMS, seeds)):
        if i == 3:  # requests to the victim are in flight now
            os.kill(victim_pid, signal.SIGKILL)
        got.append(seed)
        np.testing.assert_array_equal(batch["counts"], reference[seed], err_msg=f"seed {seed}")
    assert got == seeds, "every seed exactly once, in order"
    after = pool_stats(handles)
    assert after[1]["pid"] != victim_pid, "the killed actor was restarted"


def test_bounded_in_flight(pool_name):
    handles = get_or_create_pool(PoolSpec(pool_name, actors=1, cpus_per_actor=0.5, device="cpu"))
    client = PoolClient(handles, in_flight=2)
    sent = []
    # A lazy seed iterator shows how far ahead the client asks: never more than in_flight.
    def seeds():
        for s in range(6):
            sent.append(s)
            yield s
    for seed, _, _ in client.stream("sevi-counts", PARAMS, seeds()):
        assert len(sent) - seed <= 2 + 1
