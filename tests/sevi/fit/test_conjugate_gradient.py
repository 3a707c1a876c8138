"""sevi.fit.conjugate_gradient against a dense solve, on an ill-conditioned SPD matrix."""
import torch

from sevi.fit.conjugate_gradient import conjugate_gradient


def test_it_solves_every_row_and_reports_its_residual():
    gen = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(200, 200, generator=gen, dtype=torch.float64))
    A = (Q * torch.logspace(-3, 3, 200, dtype=torch.float64)) @ Q.T  # condition number 1e6
    A = 0.5 * (A + A.T)
    B = torch.randn(5, 200, generator=gen, dtype=torch.float64)
    X, residual, iterations = conjugate_gradient(lambda V: V @ A, B, A.diagonal(), tol=1e-10, max_iterations=5000)
    assert residual < 1e-10 and iterations > 0
    assert torch.allclose(X, torch.linalg.solve(A, B.T).T, rtol=1e-6, atol=1e-8)


def test_it_says_when_it_stopped_short():
    A = torch.diag(torch.logspace(-4, 4, 100, dtype=torch.float64))
    A = A + 0.01 * torch.ones(100, 100, dtype=torch.float64)
    _, residual, iterations = conjugate_gradient(lambda V: V @ A, torch.ones(1, 100, dtype=torch.float64),
                                                 torch.ones(100, dtype=torch.float64), tol=1e-14, max_iterations=3)
    assert iterations == 3 and residual > 1e-14
