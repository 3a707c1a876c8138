"""One local Ray instance for the whole test session (RAY_NOTES.md: ~4 s to start)."""

import uuid

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, object_store_memory=256 * 1024**2,
                 log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def pool_name(ray_local):
    """A unique pool name per test; its actors are killed afterwards."""
    from ray_jobs.pool import stop_pool

    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    stop_pool(name)
