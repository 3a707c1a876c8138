import os
import signal
import time

import numpy as np
import pytest
import ray
import torch

from ray_jobs.pool import (
    PoolClient,
    PoolSpec,
    find_pool,
    get_or_create_pool,
    pool_stats,
)
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


def wait_until(cond, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_one_pool_spec_from_the_cluster_leaves_room_for_the_jobs():
    from ray_jobs.pool import pool_spec
    from ray_jobs.sevi_train import worker_bundle

    cpu = pool_spec({"CPU": 2.0})
    # 2 CPUs: the pool holds 1, a training worker or a Tune trial (1 CPU each) gets the other.
    assert cpu.holds() == {"CPU": 1.0, "GPU": 0.0}
    assert cpu.holds()["CPU"] + worker_bundle(False, cpu.gpus_per_actor)["CPU"] <= 2.0
    gpu = pool_spec({"CPU": 96.0, "GPU": 8.0})
    assert (gpu.actors, gpu.gpus_per_actor) == (8, 0.25)
    # 8 workers beside 8 actors fill the 8 GPUs exactly, never more.
    assert gpu.holds()["GPU"] + 8 * worker_bundle(True, gpu.gpus_per_actor)["GPU"] == 8.0
    assert pool_spec({"CPU": 2.0}, actors=3, cpus_per_actor=0.25).holds()["CPU"] == 0.75


def test_idle_actors_exit_free_their_cpus_and_come_back_on_demand(pool_name):
    from ray_jobs.pool import ensure_pool, pool_spec

    spec = pool_spec({"CPU": 2.0}, pool_name, idle_timeout_s=5.0, device="cpu")  # 2 s let an actor exit between pings on a loaded box
    free = lambda: ray.available_resources().get("CPU", 0)  # noqa: E731
    before = ray.cluster_resources()["CPU"]
    # Actors killed by earlier tests give their CPUs back a moment after they end.
    assert wait_until(lambda: free() == before, 15), "CPUs still held before the test began"
    client = PoolClient.connect(spec, timeout_s=60)

    def held_while_pinged():  # a ping restarts the idle clock, so the actors stay while we look
        ray.get([h.ping.remote() for h in client.handles])
        return free() == pytest.approx(before - 1.0)

    assert wait_until(held_while_pinged, 10), "the pool holds 2 x 0.5 CPU"
    first = client.batch("sevi-counts", PARAMS, 7)
    assert wait_until(lambda: not find_pool(pool_name), 30), "idle actors did not exit"
    assert wait_until(lambda: free() == pytest.approx(before), 10), "the pool's CPUs were not freed"
    # The same client asks again: the pool is made again from its spec, and the batch is the same.
    got = [(s, b) for s, b, _ in client.stream("sevi-counts", PARAMS, [7, 8])]
    assert client.reconnects >= 1 and [s for s, _ in got] == [7, 8]
    np.testing.assert_array_equal(got[0][1]["counts"], first["counts"])
    assert len(ensure_pool(spec, 60)) == 2


def test_a_pool_that_cannot_start_fails_within_its_wait(pool_name):
    from ray_jobs.pool import ResourcesUnavailable

    t0 = time.monotonic()
    with pytest.raises(ResourcesUnavailable, match=r"could not start within 2 s; each asks for \{CPU: 64\}; "
                                                   r"the cluster has \{CPU: 4"):
        get_or_create_pool(PoolSpec(pool_name, actors=1, cpus_per_actor=64, device="cpu"), timeout_s=2)
    assert time.monotonic() - t0 < 20
    assert not find_pool(pool_name), "the actor that could not start is removed, not left pending"


def test_a_dashboard_address_runs_the_command_as_a_job_on_the_cluster():
    # A driver cannot connect to http://host:8265 ("Invalid Ray address"); the CLI submits itself
    # there as a job instead, without the address (inside a job Ray sets its own).
    from ray_jobs.pool import job_entrypoint

    assert job_entrypoint(["inspect", "--address", "http://localhost:8265", "--name", "a b"]) == \
        "python -m ray_jobs.pool inspect --name 'a b'"
    assert job_entrypoint(["stop", "--address=http://h:8265"]) == "python -m ray_jobs.pool stop"


def test_a_pool_on_the_wrong_device_is_replaced(monkeypatch):
    # CPU actors made before the GPU nodes joined: a job whose spec wants GPUs replaces them. (No
    # GPU here, so the Ray calls are stood in for; what is checked is the decision and the line.)
    import ray_jobs.pool as P

    calls, lines = [], []
    cpu_stats = [{"device": "cpu", "device_type": "cpu", "cpus": 1.0, "gpus": 0.0}] * 2
    monkeypatch.setattr(P, "find_pool", lambda name: ["h0", "h1"])
    monkeypatch.setattr(P, "pool_stats", lambda handles, timeout_s=None: cpu_stats if handles != "new" else [])
    monkeypatch.setattr(P, "stop_pool", lambda name: calls.append(("stop", name)) or 2)
    monkeypatch.setattr(P, "get_or_create_pool", lambda spec, timeout_s=None: calls.append(("create", spec)) or "new")
    gpu_spec = P.pool_spec({"CPU": 96.0, "GPU": 8.0}, "gen")
    P.ensure_pool(gpu_spec, 5, log=lines.append)
    assert calls == [("stop", "gen"), ("create", gpu_spec)]
    assert lines == ["pool 'gen': replacing actors on cpu with actors on cuda (8 x {CPU: 1, GPU: 0.25})"]
    calls.clear()
    P.ensure_pool(P.pool_spec({"CPU": 2.0}, "gen"), 5, log=lines.append)
    assert calls[0][0] == "create" and len(calls) == 1, "a pool on the right device is kept"


@pytest.mark.parametrize("argv, line", [
    (["inspect", "--address", "127.0.0.1:1", "--wait-s", "20"],
     "pool inspect: --address 127.0.0.1:1: no Ray cluster reachable there (connection refused"),
    (["start", "--actors", "0"], "pool start: --actors: got 0; expected >= 1"),
    (["inspect", "--wait-s", "-1"], "pool inspect: --wait-s: got -1.0"),
    (["stop", "--idle-timeout-s", "inf"], "pool stop: --idle-timeout-s: got inf"),
])
def test_the_pool_command_answers_in_one_line_within_its_wait(capsys, argv, line):
    """``pool inspect --address 127.0.0.1:1 --wait-s 20`` hung past 300 s."""
    from ray_jobs.pool import main

    t0 = time.monotonic()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1, err
    assert time.monotonic() - t0 < 20


def test_connect_ends_within_the_wait_where_the_port_answers_but_no_ray_does(tmp_path):
    """A port that accepts connections but is not a Ray GCS: ray.init would retry for minutes;
    the command ends after --wait-s with its one line (the process exits: Ray cannot be interrupted)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(5)
        port = s.getsockname()[1]
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "ray_jobs.pool", "inspect", "--address", f"127.0.0.1:{port}",
                            "--wait-s", "3"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and time.monotonic() - t0 < 20, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (f"pool inspect: --address 127.0.0.1:{port}: no Ray cluster answered "
                                                 f"within 3 s (--wait-s); expected the head's GCS address HOST:PORT")
