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


@pytest.mark.parametrize("coupling", ["additive", "affine"])
@pytest.mark.parametrize("dim", [6, 7])
def test_halves_couplings_compute_nflows_masked_couplings(coupling, dim):
    """The flow's couplings, split into halves once, are nflows' alternating-mask couplings with the same weights."""
    from nflows.transforms import ActNorm, AdditiveCouplingTransform, AffineCouplingTransform, CompositeTransform

    from plugen_core.flow import CouplingNet

    torch.manual_seed(0)
    ours = build_transform(dim=dim, couplings=3, hidden=16, layers=3, coupling=coupling)
    for p in ours.parameters():
        p.data = torch.randn_like(p)
    masked = {"additive": AdditiveCouplingTransform, "affine": AffineCouplingTransform}[coupling]
    nets = list(ours._transforms[0].nets)
    reference = CompositeTransform(
        [masked((torch.arange(dim) + k) % 2, lambda i, o, k=k: nets[k]) for k in range(3)] + [ours._transforms[-1]]
    )
    assert all(isinstance(n, CouplingNet) for n in nets) and isinstance(ours._transforms[-1], ActNorm)
    ours.eval(), reference.eval()
    w = torch.randn(50, dim)
    (z, logdet), (z_ref, logdet_ref) = ours(w), reference(w)
    assert torch.allclose(z, z_ref, atol=1e-5) and torch.allclose(logdet, logdet_ref, atol=1e-5)
    assert torch.allclose(ours.inverse(z)[0], reference.inverse(z)[0], atol=1e-4)
    assert not torch.allclose(z, w, atol=1e-2)


def test_epoch_order_gives_labelled_rows_their_share():
    from plugen_core.flow import epoch_order

    labelled = torch.zeros(1000, dtype=torch.bool)
    labelled[:100] = True
    gen = torch.Generator().manual_seed(0)
    natural = epoch_order(labelled, 0.0, gen)
    assert sorted(natural.tolist()) == list(range(1000))
    balanced = epoch_order(labelled, 0.5, gen)
    share = labelled[balanced].float().mean().item()
    assert 0.45 < share < 0.55
    assert set(balanced[labelled[balanced]].tolist()) == set(range(100))  # every labelled row, repeated
    assert (~labelled[balanced]).sum() == 900  # every unlabelled row exactly once


def test_epoch_order_repeats_a_few_rows_up_to_min_rows():
    from plugen_core.flow import epoch_order

    labelled = torch.ones(100, dtype=torch.bool)  # a few labelled latents alone
    order = epoch_order(labelled, 0.5, torch.Generator().manual_seed(0), min_rows=1000)
    assert len(order) == 1000 and torch.bincount(order).tolist() == [10] * 100  # every row, equally often
    assert len(epoch_order(labelled, 0.5, torch.Generator(), min_rows=50)) == 100  # never fewer than one pass
