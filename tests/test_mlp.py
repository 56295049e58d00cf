"""sclecture.mlp against independent implementations: torch autograd (float64), finite
differences, SciPy's softmax and distributions, scikit-learn's data sets; and its bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from sclecture import mlp

torch.set_num_threads(1)

TORCH_PHI = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": lambda a: a}


def torch_nll(weights, biases, X, y, activation, output, sigma2=1.0):
    """-log L / n written directly in torch (no sclecture code), for autograd."""
    H = torch.as_tensor(X, dtype=torch.float64)
    for l, (W, b) in enumerate(zip(weights, biases)):
        A = H @ W + b
        H = TORCH_PHI[activation](A) if l < len(weights) - 1 else A
    if output == "softmax":
        return torch.nn.functional.cross_entropy(H, torch.as_tensor(y, dtype=torch.long))
    if output == "sigmoid":
        return torch.nn.functional.binary_cross_entropy_with_logits(H[:, 0], torch.as_tensor(y, dtype=torch.float64))
    dist = torch.distributions.Normal(H, float(np.sqrt(sigma2)))
    yt = torch.as_tensor(y, dtype=torch.float64).reshape(H.shape)
    return -dist.log_prob(yt).sum() / H.shape[0]


def random_problem(rng, sizes, output, n=13):
    X = rng.normal(size=(n, sizes[0]))
    k = sizes[-1]
    if output == "softmax":
        y = rng.integers(0, k, size=n)
    elif output == "sigmoid":
        y = rng.integers(0, 2, size=n)
    else:
        y = rng.normal(size=(n, k))
    return X, y


NETWORKS = [
    ((4, 3), "relu", "softmax"),  # no hidden layer: multinomial logistic regression
    ((5, 8, 3), "relu", "softmax"),
    ((5, 8, 6, 4), "tanh", "softmax"),
    ((3, 7, 7, 7, 1), "sigmoid", "sigmoid"),
    ((6, 4, 1), "relu", "sigmoid"),
    ((2, 9, 5, 2), "tanh", "identity"),
    ((4, 6, 3), "identity", "identity"),
]


@pytest.mark.parametrize("sizes,activation,output", NETWORKS)
def test_backward_matches_torch_autograd(sizes, activation, output):
    rng = np.random.default_rng(len(sizes) * 100 + sizes[1])
    net = mlp.MLP(sizes, activation=activation, output=output, sigma2=0.7, random_state=3)
    for l in range(net.n_layers):  # non-zero biases, so their gradients matter
        net.biases_[l] = rng.normal(size=net.biases_[l].shape)
    X, y = random_problem(rng, sizes, output)
    loss, grads = net.backward(X, y)
    Ws = [torch.tensor(W, requires_grad=True) for W in net.weights_]
    bs = [torch.tensor(b, requires_grad=True) for b in net.biases_]
    t_loss = torch_nll(Ws, bs, X, y, activation, output, sigma2=0.7)
    t_loss.backward()
    assert abs(loss - t_loss.item()) <= 1e-10 * max(1.0, abs(t_loss.item()))
    for l in range(net.n_layers):
        np.testing.assert_allclose(grads["W"][l], Ws[l].grad.numpy(), rtol=1e-8, atol=1e-10, err_msg=f"dW_{l + 1}")
        np.testing.assert_allclose(grads["b"][l], bs[l].grad.numpy(), rtol=1e-8, atol=1e-10, err_msg=f"db_{l + 1}")
        assert grads["W"][l].shape == net.weights_[l].shape and grads["b"][l].shape == net.biases_[l].shape


@pytest.mark.parametrize("sizes,activation,output", NETWORKS[1::2])
def test_backward_matches_finite_differences(sizes, activation, output):
    rng = np.random.default_rng(7)
    net = mlp.MLP(sizes, activation=activation, output=output, random_state=1)
    net.biases_ = [rng.normal(size=b.shape) for b in net.biases_]
    X, y = random_problem(rng, sizes, output, n=9)
    _, grads = net.backward(X, y)
    for l in range(net.n_layers):
        for key, theta in (("W", net.weights_[l]), ("b", net.biases_[l])):
            before = theta.copy()
            num = mlp.numerical_gradient(lambda: net.loss(X, y), theta, eps=1e-6)
            assert np.array_equal(theta, before), "numerical_gradient must restore theta"
            assert mlp.relative_error(num, grads[key][l]) < 1e-6, f"d{key}_{l + 1}"


def test_numerical_gradient_closed_form():
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(3, 4))
    grad = mlp.numerical_gradient(lambda: float(np.sum(np.sin(theta)) + np.sum(theta**3)), theta, eps=1e-5)
    np.testing.assert_allclose(grad, np.cos(theta) + 3 * theta**2, rtol=1e-7, atol=1e-8)
    assert mlp.relative_error(grad, grad) == 0.0
    assert mlp.relative_error([1.0], [1.1]) == pytest.approx(0.1 / 2.1)


@pytest.mark.parametrize("name", sorted(mlp.ACTIVATIONS))
def test_activations_and_derivatives_match_torch(name):
    phi, dphi = mlp.ACTIVATIONS[name]
    a = np.concatenate([np.linspace(-30, 30, 41), [-1e-3, 1e-3, 0.5, -700.0, 700.0]])
    t = torch.tensor(a, requires_grad=True)
    out = TORCH_PHI[name](t)
    out.sum().backward()
    np.testing.assert_allclose(phi(a), out.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dphi(a), t.grad.numpy(), rtol=1e-9, atol=1e-15)
    assert np.all(np.isfinite(phi(a))) and np.all(np.isfinite(dphi(a)))


def test_relu_at_zero_and_shapes():
    assert mlp.relu_derivative(np.array([0.0]))[0] == 0.0
    A = np.arange(-3, 3, dtype=float).reshape(2, 3)
    for phi, dphi in mlp.ACTIVATIONS.values():
        assert phi(A).shape == A.shape and dphi(A).shape == A.shape


def test_softmax_and_log_softmax_match_scipy_and_are_stable():
    rng = np.random.default_rng(1)
    H = rng.normal(scale=5, size=(20, 6))
    np.testing.assert_allclose(mlp.softmax(H), scipy.special.softmax(H, axis=1), rtol=1e-12)
    np.testing.assert_allclose(mlp.log_softmax(H), scipy.special.log_softmax(H, axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mlp.softmax(H, axis=0), scipy.special.softmax(H, axis=0), rtol=1e-12)
    big = np.array([[1000.0, 1000.0, -1000.0], [-1e4, 0.0, 1e4]])
    P = mlp.softmax(big)
    assert np.all(np.isfinite(P)) and np.allclose(P.sum(1), 1)
    np.testing.assert_allclose(P[0], [0.5, 0.5, 0.0], atol=1e-300)
    L = mlp.log_softmax(big)
    assert np.all(np.isfinite(L))
    np.testing.assert_allclose(L[0], [-np.log(2), -np.log(2), -2000 - np.log(2)], rtol=1e-12)
    # invariance to adding a constant to every logit of a row
    np.testing.assert_allclose(mlp.softmax(H + 123.4), mlp.softmax(H), rtol=1e-10)


def test_log_likelihoods_match_scipy():
    rng = np.random.default_rng(2)
    H = rng.normal(size=(15, 4))
    y = rng.integers(0, 4, size=15)
    P = scipy.special.softmax(H, axis=1)
    expected = sum(scipy.stats.multinomial.logpmf(np.eye(4)[yi], 1, P[i]) for i, yi in enumerate(y))
    assert mlp.categorical_log_likelihood(H, y) == pytest.approx(expected, rel=1e-10)
    a = rng.normal(scale=3, size=15)
    yb = rng.integers(0, 2, size=15)
    assert mlp.bernoulli_log_likelihood(a, yb) == pytest.approx(
        scipy.stats.bernoulli.logpmf(yb, scipy.special.expit(a)).sum(), rel=1e-10)
    yg, mean = rng.normal(size=(15, 2)), rng.normal(size=(15, 2))
    assert mlp.gaussian_log_likelihood(yg, mean, 0.3) == pytest.approx(
        scipy.stats.norm.logpdf(yg, mean, np.sqrt(0.3)).sum(), rel=1e-10)
    # extreme logits stay finite: log softmax, never log(softmax)
    assert np.isfinite(mlp.categorical_log_likelihood(np.array([[800.0, -800.0]]), [1]))


def test_dense_layer_matches_torch_linear():
    rng = np.random.default_rng(3)
    X, W, b = rng.normal(size=(7, 5)), rng.normal(size=(5, 3)), rng.normal(size=3)
    lin = torch.nn.Linear(5, 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(W.T))  # torch stores W^T
        lin.bias.copy_(torch.tensor(b))
    expected = torch.tanh(lin(torch.tensor(X))).detach().numpy()
    np.testing.assert_allclose(mlp.dense_layer(X, W, b, mlp.tanh), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="shapes do not fit"):
        mlp.dense_layer(X, W.T, b)


@pytest.mark.parametrize("output", ["softmax", "sigmoid", "identity"])
def test_forward_equals_torch_module(output):
    k = 1 if output == "sigmoid" else 3
    net = mlp.MLP((4, 6, 5, k), activation="tanh", output=output, random_state=5)
    X = np.random.default_rng(4).normal(size=(8, 4))
    module = net.to_torch()
    np.testing.assert_allclose(net.forward(X), module(torch.tensor(X)).detach().numpy(), rtol=1e-12)
    assert sum(isinstance(m, torch.nn.Linear) for m in module) == 3


def test_mlp_solves_xor_and_linear_model_cannot():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    y = np.array([0, 1, 1, 0])
    net = mlp.MLP((2, 4, 1), activation="tanh", output="sigmoid", lr=1.0, n_iter=2000, random_state=0).fit(X, y)
    assert net.score(X, y) == 1.0
    assert net.loss_curve_[-1] < 0.01 < net.loss_curve_[0]
    # with no hidden layer the network is logistic regression: at most 3 of 4 XOR points
    lin = mlp.MLP((2, 1), output="sigmoid", lr=1.0, n_iter=2000, random_state=0).fit(X, y)
    assert lin.score(X, y) <= 0.75


def test_mlp_fit_is_reproducible_and_beats_linear_on_circles():
    from sklearn.datasets import make_circles

    X, y = make_circles(n_samples=200, noise=0.1, factor=0.4, random_state=0)
    kw = dict(activation="relu", output="softmax", lr=0.5, n_iter=300, batch_size=50, random_state=0)
    a = mlp.MLP((2, 16, 2), **kw).fit(X, y)
    b = mlp.MLP((2, 16, 2), **kw).fit(X, y)
    assert np.array_equal(a.weights_[0], b.weights_[0])
    assert a.score(X, y) > 0.95
    np.testing.assert_allclose(a.predict_proba(X).sum(1), 1.0)
    assert mlp.MLP((2, 2), **kw).fit(X, y).score(X, y) < 0.75


def test_regression_fit_reduces_squared_error():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(100, 1))
    y = np.sin(2 * X[:, 0]) + 0.05 * rng.normal(size=100)
    net = mlp.MLP((1, 20, 1), activation="tanh", output="identity", lr=0.2, n_iter=2000, random_state=0).fit(X, y)
    assert net.score(X, y) > 0.9
    assert net.predict(X).shape == (100,)


def test_make_torch_mlp_unchanged():
    m = mlp.make_torch_mlp((10, 8, 4, 3), activation="tanh", output="softmax", dropout=0.2, batch_norm=True)
    kinds = [type(x).__name__ for x in m]
    assert kinds == ["Linear", "BatchNorm1d", "Tanh", "Dropout", "Linear", "BatchNorm1d", "Tanh", "Dropout",
                     "Linear", "Softmax"]
    assert [type(x).__name__ for x in mlp.make_torch_mlp((3, 2))] == ["Linear", "Identity"]
    with pytest.raises(ValueError, match="unknown activation"):
        mlp.make_torch_mlp((3, 2), activation="swish")


def test_torch_classifier_fits_blobs():
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=200, centers=3, n_features=10, random_state=0)
    names = np.array(["B", "NK", "T"])[y]
    clf = mlp.TorchMLPClassifier(hidden=(16,), epochs=8, lr=2e-2, random_state=0, device="cpu").fit(X, names)
    assert list(clf.classes_) == ["B", "NK", "T"]
    assert clf.score(X, names) > 0.95
    P = clf.predict_proba(X)
    assert P.shape == (200, 3) and np.allclose(P.sum(1), 1, atol=1e-5)
    again = mlp.TorchMLPClassifier(hidden=(16,), epochs=8, lr=2e-2, random_state=0, device="cpu").fit(X, names)
    np.testing.assert_allclose(again.predict_proba(X), P, rtol=1e-6)
    import scipy.sparse as sp

    np.testing.assert_allclose(clf.predict_proba(sp.csr_matrix(X)), P, rtol=1e-6)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :5])
    with pytest.raises(ValueError, match="single class"):
        mlp.TorchMLPClassifier(epochs=1).fit(X, np.zeros(200))
    with pytest.raises(RuntimeError, match="not fitted"):
        mlp.TorchMLPClassifier().predict(X)


# ------------------------------------------------------------------ bad input

def test_bad_input_raises_clear_errors():
    net = mlp.MLP((3, 4, 2), output="softmax")
    X = np.ones((5, 3))
    with pytest.raises(ValueError, match="expects 3"):
        net.forward(np.ones((5, 4)))
    with pytest.raises(ValueError, match=r"0\.\.1"):
        net.backward(X, [0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match=r"0\.\.1"):
        net.fit(X, [0, -1, 0, 1, 1])
    with pytest.raises(ValueError, match="non-integer"):
        net.loss(X, [0, 0.5, 1, 1, 0])
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        net.fit(bad, [0, 1, 0, 1, 0])
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        net.predict(bad)
    with pytest.raises(ValueError, match="one label per row"):
        net.loss(X, [0, 1])
    with pytest.raises(ValueError, match="2-d"):
        net.forward(np.ones(3))
    reg = mlp.MLP((3, 1), output="identity")
    with pytest.raises(ValueError, match="NaN or infinite"):
        reg.fit(X, [1.0, np.nan, 0, 0, 0])
    with pytest.raises(ValueError, match="Bernoulli"):
        mlp.MLP((3, 2), output="sigmoid")
    with pytest.raises(ValueError, match="unknown output"):
        mlp.MLP((3, 2), output="poisson")
    with pytest.raises(ValueError, match="unknown activation"):
        mlp.MLP((3, 2), activation="gelu")
    with pytest.raises(ValueError, match="layer_sizes"):
        mlp.MLP((3,))
    with pytest.raises(ValueError, match="0..2"):
        mlp.categorical_log_likelihood(np.zeros((2, 3)), [0, 3])
    with pytest.raises(TypeError, match="NumPy array of floats"):
        mlp.numerical_gradient(lambda: 0.0, np.arange(3))
    with pytest.raises(ValueError, match="layer 2"):
        mlp.MLP.from_weights([np.ones((3, 4)), np.ones((5, 2))], [np.zeros(4), np.zeros(2)])
    clf = mlp.TorchMLPClassifier(epochs=1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        clf.fit(bad, np.array(["a", "b", "a", "b", "a"]))


def test_two_layer_backward_matches_autograd():
    rng = np.random.default_rng(9)
    X, y = rng.normal(size=(11, 4)), rng.integers(0, 3, size=11)
    W1, b1, W2, b2 = rng.normal(size=(4, 6)), rng.normal(size=6), rng.normal(size=(6, 3)), rng.normal(size=3)
    grads = mlp.two_layer_backward(X, y, W1, b1, W2, b2)
    params = [torch.tensor(p, requires_grad=True) for p in (W1, b1, W2, b2)]
    torch_nll(params[::2], params[1::2], X, y, "relu", "softmax").backward()
    for key, p in zip(["W1", "b1", "W2", "b2"], params):
        np.testing.assert_allclose(grads[key], p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=key)


def test_plot_decision_surface():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    net = mlp.MLP((2, 3, 1), output="sigmoid")
    ax = mlp.plot_decision_surface(net, X, [0, 1, 1, 0], resolution=20)
    assert len(ax.collections) >= 2
    ax = mlp.plot_decision_surface(lambda G: np.full(len(G), 0.3), X, [0, 1, 1, 0], resolution=20)
    with pytest.raises(ValueError, match="two columns"):
        mlp.plot_decision_surface(net, np.ones((4, 3)), [0, 1, 1, 0])
    plt.close("all")


@pytest.mark.data
def test_torch_classifier_on_pbmc3k_anndata(real_data):
    from sclecture import datasets, preprocessing

    adata = datasets.pbmc3k()
    clf = mlp.TorchMLPClassifier(hidden=(32,), epochs=3, lr=1e-2, random_state=0, device="cpu")
    with pytest.raises(ValueError, match="missing label"):
        clf.fit(adata, "cell_type")
    adata = adata[adata.obs["cell_type"].notna()].copy()
    adata = preprocessing.select_genes(adata, preprocessing.highly_variable_genes(adata, n_top=200))
    adata.X = preprocessing.log1p_normalize(adata)
    clf.fit(adata, "cell_type")
    assert set(clf.classes_) == set(adata.obs["cell_type"].cat.categories)
    assert clf.predict(adata).dtype == clf.classes_.dtype
    assert clf.score(adata, "cell_type") > 0.7
