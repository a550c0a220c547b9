"""A Deep Belief Network: stacked RBMs, pretrained greedily by CD-k, used per pixel."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from networks.config import VisibleUnits

_MOMENTUM = 0.5
_CD_WEIGHT_DECAY = 1e-4
# Hinton's guide suggests 0.01; from that close to zero, CD on Gaussian visible units
# takes hundreds of updates to leave the symmetric start, so a few epochs learned nothing.
_INIT_STD = 0.1


class RBM(nn.Module):
    """A restricted Boltzmann machine with Bernoulli hidden units.

    Energy, for Bernoulli visible units ``v`` in {0, 1}:
    ``E(v, h) = -b.v - c.h - h.W v``; for Gaussian visible units of unit variance
    (standardise the data first): ``E(v, h) = |v - b|^2 / 2 - c.h - h.W v``.

    ``visible_bias`` (``b``) only enters the generative, downward pass, which
    fine-tuning by back-propagation never runs: it is a parameter with
    ``requires_grad=False`` that only contrastive divergence updates.

    Args:
        n_visible: Visible units.
        n_hidden: Hidden units.
        visible: ``"bernoulli"`` or ``"gaussian"`` visible units.
    """

    def __init__(self, n_visible: int, n_hidden: int, visible: VisibleUnits = "bernoulli") -> None:
        super().__init__()
        if visible not in ("bernoulli", "gaussian"):
            raise ValueError(f"visible must be 'bernoulli' or 'gaussian', got {visible!r}")
        self.visible = visible
        self.weight = nn.Parameter(torch.randn(n_hidden, n_visible) * _INIT_STD)
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden))
        self.visible_bias = nn.Parameter(torch.zeros(n_visible), requires_grad=False)

    def hidden_prob(self, v: torch.Tensor) -> torch.Tensor:
        """``p(h = 1 | v)``, differentiable: the upward pass used as a feature extractor.

        Args:
            v: ``(N, n_visible)``.

        Returns:
            ``(N, n_hidden)`` probabilities.
        """
        return torch.sigmoid(F.linear(v, self.weight, self.hidden_bias))

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """``E[v | h]``: probabilities (Bernoulli) or means (Gaussian) of the visible units.

        Args:
            h: ``(N, n_hidden)``.

        Returns:
            ``(N, n_visible)``.
        """
        activation = F.linear(h, self.weight.t(), self.visible_bias)
        return torch.sigmoid(activation) if self.visible == "bernoulli" else activation

    def sample_visible(
        self, h: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``v ~ p(v | h)``: Bernoulli draws, or the mean plus unit-variance noise.

        Args:
            h: ``(N, n_hidden)`` hidden states.
            generator: Random source.

        Returns:
            ``(N, n_visible)`` samples.
        """
        mean = self.visible_mean(h)
        if self.visible == "bernoulli":
            return torch.bernoulli(mean, generator=generator)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + noise

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """Free energy ``F(v) = -log sum_h exp(-E(v, h))`` per vector.

        Args:
            v: ``(N, n_visible)``.

        Returns:
            ``(N,)``.
        """
        hidden_term = F.softplus(F.linear(v, self.weight, self.hidden_bias)).sum(-1)
        if self.visible == "bernoulli":
            return -(v @ self.visible_bias) - hidden_term
        return 0.5 * ((v - self.visible_bias) ** 2).sum(-1) - hidden_term

    @torch.no_grad()
    def reconstruction_error(self, v: torch.Tensor) -> float:
        """Mean squared error of one deterministic up-down pass ``v -> p(h|v) -> E[v|h]``.

        Args:
            v: ``(N, n_visible)``.

        Returns:
            The error averaged over vectors and units.
        """
        return float(((self.visible_mean(self.hidden_prob(v)) - v) ** 2).mean())

    @torch.no_grad()
    def cd_gradients(
        self, v0: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Contrastive divergence CD-k estimates of the log-likelihood gradient.

        Positive phase: ``<v0 p(h|v0)>``; negative phase: ``<vk p(h|vk)>`` after k steps
        of block Gibbs sampling started at the data, sampling hidden and visible units
        alike (with mean-field visible units the chain would not converge to the model's
        distribution as k grows). Using ``p(h|v)`` rather than sampled ``h`` in the
        statistics lowers their variance without bias. Nothing here is differentiated,
        so no gradient flows through the chain.

        Args:
            v0: ``(N, n_visible)`` data.
            k: Gibbs steps.
            generator: Random source of the hidden samples.

        Returns:
            Gradient estimates for ``weight``, ``visible_bias``, ``hidden_bias``, averaged
            over the N vectors (ascend them to raise the likelihood).
        """
        ph0 = self.hidden_prob(v0)
        ph = ph0
        vk = v0
        for _ in range(k):
            vk = self.sample_visible(torch.bernoulli(ph, generator=generator), generator)
            ph = self.hidden_prob(vk)
        n = v0.shape[0]
        grad_w = (ph0.t() @ v0 - ph.t() @ vk) / n
        grad_b = (v0 - vk).mean(0)
        grad_c = (ph0 - ph).mean(0)
        return grad_w, grad_b, grad_c

    @torch.no_grad()
    def fit(
        self,
        data: torch.Tensor,
        *,
        epochs: int,
        lr: float,
        k: int = 1,
        batch_size: int = 256,
        generator: torch.Generator | None = None,
    ) -> list[float]:
        """Train by CD-k with momentum SGD and a small weight decay.

        Bernoulli visible biases start at the log-odds of the data's unit means, so the
        weights only have to learn the structure beyond the marginals.

        Args:
            data: ``(N, n_visible)`` training vectors (in [0, 1] for Bernoulli units).
            epochs: Passes over ``data``.
            lr: Learning rate.
            k: Gibbs steps of CD-k.
            batch_size: Vectors per update.
            generator: Random source of shuffling and sampling (on ``data``'s device).

        Returns:
            The reconstruction error after every epoch.
        """
        if self.visible == "bernoulli":
            mean = data.mean(0).clamp(1e-3, 1 - 1e-3)
            self.visible_bias.copy_(torch.log(mean / (1 - mean)))
        params = (self.weight, self.visible_bias, self.hidden_bias)
        velocity = [torch.zeros_like(p) for p in params]
        errors = []
        for _ in range(epochs):
            order = torch.randperm(data.shape[0], generator=generator, device=data.device)
            for start in range(0, data.shape[0], batch_size):
                batch = data[order[start : start + batch_size]]
                grads = self.cd_gradients(batch, k, generator)
                for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
                    decay = _CD_WEIGHT_DECAY * param if param is self.weight else 0.0
                    velocity[i].mul_(_MOMENTUM).add_(grad - decay, alpha=lr)
                    param.add_(velocity[i])
            errors.append(self.reconstruction_error(data))
        return errors


class DBN(nn.Module):
    """Stacked RBMs used as a per-pixel feature extractor on ``(B, C, H, W)`` maps.

    Each RBM's upward pass ``sigmoid(W v + c)`` is applied as a 1x1 convolution, so the
    DBN runs fully convolutionally and is fine-tuned by back-propagation with the rest of
    the network after :meth:`pretrain`. Inputs are standardised per channel with
    statistics fitted during pretraining (buffers, saved with the weights); Bernoulli
    visible units see the standardised values squashed by a sigmoid.

    Args:
        n_visible: Input channels.
        hidden: Hidden units of each RBM, first first.
        visible: Visible units of the first RBM; deeper ones are Bernoulli, since they see
            hidden probabilities.
    """

    def __init__(
        self, n_visible: int, hidden: Sequence[int], visible: VisibleUnits = "gaussian"
    ) -> None:
        super().__init__()
        sizes = [n_visible, *hidden]
        self.visible = visible
        self.rbms = nn.ModuleList(
            RBM(sizes[i], sizes[i + 1], visible if i == 0 else "bernoulli")
            for i in range(len(hidden))
        )
        self.register_buffer("input_mean", torch.zeros(n_visible))
        self.register_buffer("input_std", torch.ones(n_visible))
        self.out_channels = sizes[-1]

    def _visible_input(self, v: torch.Tensor, channel_dim: int) -> torch.Tensor:
        shape = [1] * v.dim()
        shape[channel_dim] = -1
        z = (v - self.input_mean.view(shape)) / self.input_std.view(shape)
        return torch.sigmoid(z) if self.visible == "bernoulli" else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Extract per-pixel features.

        Args:
            x: ``(B, n_visible, H, W)``.

        Returns:
            ``(B, hidden[-1], H, W)`` hidden probabilities of the top RBM.
        """
        h = self._visible_input(x, channel_dim=1)
        for rbm in self.rbms:
            h = torch.sigmoid(F.conv2d(h, rbm.weight[:, :, None, None], rbm.hidden_bias))
        return h

    @torch.no_grad()
    def pretrain(
        self,
        pixels: torch.Tensor,
        *,
        epochs: int,
        lr: float,
        k: int = 1,
        batch_size: int = 256,
        generator: torch.Generator | None = None,
    ) -> list[list[float]]:
        """Greedy layer-wise unsupervised pretraining on per-pixel feature vectors.

        Fits the input standardisation to ``pixels``, trains the first RBM on them by
        CD-k, then each next RBM on the hidden probabilities of the one below.

        Args:
            pixels: ``(N, n_visible)`` feature vectors of sampled valid pixels.
            epochs: CD epochs per RBM.
            lr: CD learning rate.
            k: Gibbs steps of CD-k.
            batch_size: Vectors per CD update.
            generator: Random source (on ``pixels``' device).

        Returns:
            Per RBM, the reconstruction error after every epoch.
        """
        pixels = pixels.to(self.input_mean.device, torch.float32)
        std = pixels.std(0) if pixels.shape[0] > 1 else torch.ones_like(self.input_std)
        self.input_mean.copy_(pixels.mean(0))
        # A constant channel carries no information; dividing by ~0 would blow it up.
        self.input_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        data = self._visible_input(pixels, channel_dim=1)
        history = []
        for rbm in self.rbms:
            history.append(
                rbm.fit(data, epochs=epochs, lr=lr, k=k, batch_size=batch_size, generator=generator)
            )
            data = rbm.hidden_prob(data)
        return history
