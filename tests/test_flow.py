"""The flow F is invertible and its log-determinant is the true one."""
import pytest
import torch
from torch.autograd.functional import jacobian

from plugen_core.flow import build_transform


@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_inverse_recovers_input_and_logdet_matches_numerical_jacobian(coupling):
    torch.manual_seed(0)
    transform = build_transform(dim=6, couplings=4, hidden=16, layers=3, coupling=coupling)
    transform.train()
    transform(torch.randn(64, 6) * 3 + 1)  # data-dependent ActNorm init, so the scaling is not the identity
    for p in transform.parameters():  # zero-initialised last layers would make every coupling the identity
        p.data += 0.1 * torch.randn_like(p)
    transform.eval()

    w = torch.randn(5, 6, dtype=torch.float64)
    transform.double()
    z, logdet = transform(w)
    w_back, _ = transform.inverse(z)
    assert torch.allclose(w_back, w, atol=1e-8)
    assert not torch.allclose(z, w, atol=1e-3)

    for i in range(len(w)):
        jac = jacobian(lambda x: transform(x[None])[0][0], w[i])
        assert torch.allclose(logdet[i], torch.slogdet(jac).logabsdet, atol=1e-6)
    if coupling == "affine":
        assert logdet.std() > 1e-4  # volume changes differ between points: the check above is not trivial
