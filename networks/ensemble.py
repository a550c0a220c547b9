"""Seed ensembles: one configuration trained with several seeds, predicting as one model.

Small landslide data sets leave every single run at the mercy of its seed (which patches
the first batches show, how the weights start); averaging the probabilities of a few runs
of the same configuration is the usual remedy (on the Landslide4Sense sample, three seeds
raised the tuned network's test AUC from 0.976 to 0.981, ``docs/results.md``). A
:class:`SeedEnsemble` is an ordinary module of this package: it returns logits whose
softmax is the members' mean probability, so training loss, metrics, checkpoints and
``hpo predict`` treat it like any single network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from networks.errors import ConfigError


class SeedEnsemble(nn.Module):
    """Members of one architecture whose landslide probabilities are averaged.

    Args:
        members: Two or more models of this package with the same ``n_sources`` and
            ``n_times``.

    Raises:
        ConfigError: Fewer than two members, or members with other inputs.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ConfigError(
                f"an ensemble needs two members or more, got {len(members)}",
                key="members",
                hint="use the single model itself",
            )
        shapes = {(getattr(m, "n_sources", None), getattr(m, "n_times", None)) for m in members}
        if len(shapes) != 1 or None in next(iter(shapes)):
            raise ConfigError(
                f"ensemble members take different inputs: {sorted(map(str, shapes))}",
                key="members",
                hint="train every member on the same data",
            )
        self.members = nn.ModuleList(members)
        self.n_sources, self.n_times = next(iter(shapes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Two-class logits ``(B, 2, h, w)``: the log of the members' mean probabilities.

        Args:
            x: ``(B, S, T, h, w)`` inputs.

        Returns:
            Logits whose softmax is the mean of the members' softmax outputs.
        """
        log_probs = torch.stack(
            [torch.log_softmax(m(x).float(), dim=1) for m in self.members]
        )
        # log of the mean probability, in log space: members certain to 1 - 1e-40 keep
        # their ranking instead of all rounding to probability 1.
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


__all__ = ["SeedEnsemble"]
