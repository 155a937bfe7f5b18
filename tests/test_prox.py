import numpy as np
import pytest

from sklearn_ergo._prox import Huber, L1Norm, SquaredL2, make_penalty

PENALTIES = [L1Norm(), Huber(0.3)]


@pytest.mark.parametrize("F", PENALTIES, ids=["l1", "huber"])
@pytest.mark.parametrize("sigma", [0.2, 1.0, 3.0])
def test_moreau_identity(F, sigma):
    # prox_{sigma F*}(z) = z - sigma prox_{F / sigma}(z / sigma)
    z = np.linspace(-4, 4, 41)
    expected = z - sigma * F.prox(z / sigma, 1.0 / sigma)
    np.testing.assert_allclose(F.prox_conjugate(z.copy(), sigma), expected, atol=1e-12)


@pytest.mark.parametrize("F", PENALTIES, ids=["l1", "huber"])
def test_prox_minimises_its_objective(F):
    rng = np.random.default_rng(0)
    u, tau = 2 * rng.standard_normal(50), 0.7
    p = F.prox(u, tau)

    def objective(v):
        return F.value(v) + np.sum((v - u) ** 2) / (2 * tau)

    for _ in range(20):
        assert objective(p) <= objective(p + 1e-3 * rng.standard_normal(50)) + 1e-12


@pytest.mark.parametrize("F", PENALTIES, ids=["l1", "huber"])
def test_conjugate_prox_slope_matches_finite_differences(F):
    sigma, h = 0.8, 1e-7
    z = np.array([-3.0, -0.5, 0.1, 0.9, 2.5])
    y = F.prox_conjugate(z.copy(), sigma)
    fd = (F.prox_conjugate(z + h, sigma) - F.prox_conjugate(z - h, sigma)) / (2 * h)
    slope = np.where(np.abs(y) < 1, F.prox_conjugate_slope(sigma), 0.0)
    np.testing.assert_allclose(slope, fd, atol=1e-6)


def test_prox_conjugate_in_place():
    z = np.array([-2.0, 0.5, 3.0])
    out = Huber(1.0).prox_conjugate(z, 1.0, out=z)
    assert out is z
    np.testing.assert_allclose(z, [-1.0, 0.25, 1.0])


def test_squared_l2_prox():
    G, z = SquaredL2(), np.array([1.0, -2.0])
    np.testing.assert_allclose(G.prox(z, 0.5), z / 1.5)
    assert G.prox_slope(0.5) == pytest.approx(1 / 1.5)


def test_make_penalty_errors():
    with pytest.raises(ValueError, match="penalty must be"):
        make_penalty("l2", 0.1)
    with pytest.raises(ValueError, match="huber_eps must be > 0"):
        make_penalty("huber", 0.0)
