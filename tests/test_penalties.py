import numpy as np
import pytest

from sklearn_ergo._penalties import L1, Huber, Log, SquaredL2, make_penalty

PENALTIES = [L1(), Huber(0.3)]


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
        make_penalty("l2")
    with pytest.raises(ValueError, match="huber_eps must be > 0"):
        make_penalty("huber", huber_eps=0.0)
    huber = Huber(0.1)
    assert make_penalty(huber) is huber  # an object is used as given


def test_flags():
    assert not L1().smooth and Huber(0.1).smooth
    assert L1().conjugate_l2 == 0.0 and Huber(0.25).conjugate_l2 == 0.25
    assert Log().reweighted and not L1().reweighted
    assert Log().param_names == ("eps",) and L1().param_names == ()


def test_log_weights_and_their_derivatives():
    rng = np.random.default_rng(0)
    F = Log()
    z = rng.standard_normal(20)
    eps = np.exp(rng.uniform(-2, 1, size=20))
    w = F.weights(z, {"eps": eps})
    assert np.all((0 < w) & (w <= 1))
    # The weights are the slopes of the penalty: phi'(|z|) = eps / (eps + |z|).
    h = 1e-6
    a = np.abs(z)
    fd = (
        eps * np.log1p((a + h) / eps) - eps * np.log1p(np.maximum(a - h, 0) / eps)
    ) / (2 * h)
    np.testing.assert_allclose(w, fd, rtol=1e-6)
    # weights_vjp against central differences in z and eps.
    d_w = rng.standard_normal(20)
    d_z, d_params = F.weights_vjp(z, w, {"eps": eps}, d_w.copy())
    for x, name in ((z, "z"), (eps, "eps")):
        e = h * rng.standard_normal(20)

        def f(v, name=name):
            args = (v, eps) if name == "z" else (z, v)
            return float(d_w @ F.weights(args[0], {"eps": args[1]}))

        fd = (f(x + e) - f(x - e)) / 2
        grad = d_z if name == "z" else d_params["eps"]
        assert abs(fd - grad @ e) <= 1e-6 * abs(fd)
