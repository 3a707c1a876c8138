"""Shared fixtures of the coating tests; tmm and colour-science are test-only dependencies."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # The suite's tensors are small; one thread avoids oversubscribing a shared 2-core box.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
