"""Relations of a batch: distances against torch.cdist at any scale, exact power-of-two
rescaling, row normalisation that neither overflows nor underflows."""

import pytest
import torch

from rkd_pml.functional.relations import power_of_two_scale, relations, unit_rows


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distances_in_units_of_scale(scale, dtype):
    x = (torch.randn(7, 5, dtype=torch.float64) * scale).to(dtype)
    rel = relations(x)
    expected = torch.cdist(x.double(), x.double())
    assert rel.scale.dtype == torch.float64 and rel.scale.ndim == 0
    torch.testing.assert_close(rel.dist * rel.scale, expected, rtol=1e-12, atol=0.0)
    # the centred, rescaled batch has its largest entry in [0.5, 1): relations of order 1
    assert 0.1 < float(rel.dist.max()) < 2 * 5**0.5


def test_power_of_two_scale():
    x = torch.tensor([[3.0, -0.7], [1e-3, 2.5]], dtype=torch.float64)
    assert float(power_of_two_scale(x)) == 4.0
    assert power_of_two_scale(x, dim=1).flatten().tolist() == [4.0, 4.0]
    assert float(power_of_two_scale(torch.zeros(3, 2))) == 1.0
    for k in (-120, 0, 120):
        assert float(power_of_two_scale(x * 2.0**k)) == 4.0 * 2.0**k


def test_unit_rows_at_any_norm():
    x = torch.tensor([[3e30, 4e30], [3e-30, -4e-30], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float32)
    out = unit_rows(x)
    expected = torch.tensor([[0.6, 0.8], [0.6, -0.8], [0.0, 0.0], [2**-0.5, 2**-0.5]], dtype=torch.float64)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-7, atol=0.0)
    # F.normalize in float32 gives zeros for the first row and leaves the second unscaled
    assert float(torch.nn.functional.normalize(x, dim=1)[0].abs().max()) == 0.0


def test_unit_rows_gradient_is_finite_for_a_zero_row():
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    unit_rows(x).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.equal(x.grad[0], torch.zeros(2, dtype=torch.float64))
