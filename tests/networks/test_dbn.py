import itertools

import torch

from networks import DBN, RBM


def _structured_binary_data(n: int = 400) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    prototypes = (torch.rand(4, 16, generator=g) > 0.5).float()
    data = prototypes[torch.randint(0, 4, (n,), generator=g)]
    flips = torch.rand(n, 16, generator=g) < 0.05
    return torch.where(flips, 1 - data, data)


def test_cd1_at_least_halves_reconstruction_error():
    torch.manual_seed(0)
    data = _structured_binary_data()
    rbm = RBM(16, 8, "bernoulli")
    # The best an RBM without weights can do: predict every unit's mean.
    marginal_error = float(data.var(0, unbiased=False).mean())
    errors = rbm.fit(
        data, epochs=20, lr=0.1, k=1, batch_size=20, generator=torch.Generator().manual_seed(1)
    )
    assert rbm.reconstruction_error(data) == errors[-1]
    assert errors[-1] <= 0.5 * marginal_error
    assert errors[-1] <= 0.5 * RBM(16, 8).reconstruction_error(data)


def _exact_gradient(rbm: RBM, data: torch.Tensor) -> torch.Tensor:
    """d mean log p(v) / dW, by enumerating every visible state of a tiny Bernoulli RBM."""
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=rbm.weight.shape[1])))
    model_prob = torch.softmax(-rbm.free_energy(states), dim=0)
    positive = rbm.hidden_prob(data).t() @ data / data.shape[0]
    negative = (rbm.hidden_prob(states) * model_prob[:, None]).t() @ states
    return positive - negative


def test_cd_negative_phase_approaches_the_exact_gradient_for_long_chains():
    torch.manual_seed(0)
    rbm = RBM(4, 3, "bernoulli")
    with torch.no_grad():
        rbm.weight.normal_(0, 1.0)
        rbm.visible_bias.normal_(0, 0.5)
        rbm.hidden_bias.normal_(0, 0.5)
    data = (torch.rand(20000, 4, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    grad_w, _, _ = rbm.cd_gradients(data, k=30, generator=torch.Generator().manual_seed(3))
    exact = _exact_gradient(rbm, data)
    assert torch.allclose(grad_w, exact, atol=0.02)
    # CD-1 is biased on this model, so the test above can tell the chain length apart.
    short, _, _ = rbm.cd_gradients(data, k=1, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(short, exact, atol=0.02)


def test_cd_gradients_build_no_autograd_graph():
    rbm = RBM(5, 3, "gaussian")
    grads = rbm.cd_gradients(torch.randn(8, 5), k=2)
    assert all(not g.requires_grad for g in grads)


def test_gaussian_pretraining_lowers_error_and_fits_standardisation():
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(3000, 3, generator=g)
    pixels = 5.0 + 2.0 * (latent @ torch.randn(3, 10, generator=g))
    dbn = DBN(10, (8, 4), visible="gaussian")
    errors = dbn.pretrain(pixels, epochs=4, lr=0.01, k=1, batch_size=64, generator=g)
    assert [len(e) for e in errors] == [4, 4]
    assert errors[0][-1] < 0.5  # standardised data: 1.0 is the weightless error
    assert torch.allclose(dbn.input_mean, pixels.mean(0), atol=1e-4)
    assert torch.allclose(dbn.input_std, pixels.std(0), rtol=1e-4)


def test_dbn_forward_is_the_stacked_upward_pass_per_pixel():
    torch.manual_seed(0)
    dbn = DBN(6, (5, 3), visible="bernoulli")
    x = torch.randn(2, 6, 4, 7)
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 6)
    expected = torch.sigmoid(pixels)
    for rbm in dbn.rbms:
        expected = rbm.hidden_prob(expected)
    got = dbn(x).permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.allclose(got, expected, atol=1e-6)
    assert [r.visible for r in dbn.rbms] == ["bernoulli", "bernoulli"]
    assert DBN(6, (5, 3), visible="gaussian").rbms[1].visible == "bernoulli"
