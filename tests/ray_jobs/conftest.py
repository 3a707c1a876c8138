"""One local Ray instance for the tests of this package (about 4 s to start; docs/ray.md).

Package scope, not session: ``ray.init`` leaves its own SIGTERM handler and core-worker threads in
the pytest process, and the signal tests of ``tests/sevi/cli/test_policy.py`` then ran against Ray's
handler (a failed assertion) and brought the process down (SIGABRT). Shut down after the last test
here, Ray is gone before any other package runs."""

import uuid

import pytest


@pytest.fixture(scope="package")
def ray_local():
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, object_store_memory=256 * 1024**2,
                 log_to_driver=False)
    yield ray
    ray.shutdown()
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # ray.init's handlers (Python's and its C one) outlive shutdown


@pytest.fixture
def pool_name(ray_local):
    """A unique pool name per test; its actors are killed afterwards."""
    from ray_jobs.pool import stop_pool

    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    stop_pool(name)


@pytest.fixture
def two_free_cpus(ray_local):
    """Leaves the session's 4-CPU instance with 2 CPUs to give, like a 2-CPU laptop or head: an
    actor holds the other 2 for the test's duration."""
    import ray

    @ray.remote(num_cpus=ray.cluster_resources()["CPU"] - 2)
    class Hold:
        def ping(self):
            return 1

    holder = Hold.remote()
    ray.get(holder.ping.remote(), timeout=60)
    yield holder
    ray.kill(holder)
