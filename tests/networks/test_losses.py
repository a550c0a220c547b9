import math

import pytest
import torch

from networks import FusionLoss, HeadConfig, fusion_loss


def _logits(p: list[float]) -> torch.Tensor:
    """(1, 2, 1, n) logits whose softmax gives landslide probabilities p."""
    p_t = torch.tensor(p, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p_t), torch.log(p_t / (1 - p_t))]).view(1, 2, 1, -1)


def test_equals_hand_computed_eq8():
    probs, labels = [0.8, 0.3, 0.6], [1, 0, 0]
    mse_weight, pos_weight = 0.5, 3.0
    expected = (
        (mse_weight * 0.2**2 + pos_weight * -math.log(0.8))
        + (mse_weight * 0.3**2 - math.log(0.7))
        + (mse_weight * 0.6**2 - math.log(0.4))
    ) / 3
    loss = fusion_loss(
        _logits(probs), torch.tensor([[labels]]), mse_weight=mse_weight, pos_weight=pos_weight
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_invalid_pixels_never_count():
    logits = _logits([0.8, 0.3, 0.6]).float()
    labels = torch.tensor([[[1, 0, 0]]])
    valid = torch.tensor([[[True, True, False]]])
    garbage = logits.clone()
    garbage[..., 2] = float("nan")
    masked = fusion_loss(garbage, torch.tensor([[[1, 0, 1]]]), valid, mse_weight=0.5)
    reference = fusion_loss(logits[..., :2], labels[..., :2], mse_weight=0.5)
    assert masked.item() == pytest.approx(reference.item(), rel=1e-6)


def test_no_valid_pixel_gives_differentiable_zero():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    loss = fusion_loss(logits, torch.ones(1, 3, 3), torch.zeros(1, 3, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_module_reads_weights_from_head_config():
    logits, labels = torch.randn(2, 2, 4, 5), torch.randint(0, 2, (2, 4, 5))
    head = HeadConfig(mse_weight=2.0, pos_weight=5.0)
    expected = fusion_loss(logits, labels, mse_weight=2.0, pos_weight=5.0)
    assert FusionLoss(head)(logits, labels).item() == pytest.approx(expected.item())
    assert expected.item() > fusion_loss(logits, labels).item()


def test_dice_term_is_added_beside_eq8_on_valid_pixels():
    probs, labels = [0.8, 0.3, 0.6], [1, 0, 0]
    logits, target = _logits(probs), torch.tensor([[labels]])
    base = fusion_loss(logits, target, pos_weight=2.0)
    dice = 1 - (2 * 0.8 + 1) / (0.8 + 0.3 + 0.6 + 1 + 1)
    with_dice = fusion_loss(logits, target, pos_weight=2.0, dice_weight=0.5)
    assert with_dice.item() == pytest.approx(base.item() + 0.5 * dice, rel=1e-6)
    garbage = logits.clone()
    garbage[..., 2] = float("nan")
    valid = torch.tensor([[[True, True, False]]])
    masked = fusion_loss(garbage, torch.tensor([[[1, 0, 1]]]), valid, dice_weight=1.0)
    reference = fusion_loss(logits[..., :2], target[..., :2], dice_weight=1.0)
    assert masked.item() == pytest.approx(reference.item(), rel=1e-6)
    assert FusionLoss(HeadConfig(dice_weight=0.5))(logits, target).item() == pytest.approx(
        fusion_loss(logits, target, pos_weight=3.0, dice_weight=0.5).item()
    )


def test_focal_gamma_zero_is_eq8_and_gamma_scales_by_the_miss():
    probs, labels = [0.8, 0.3, 0.6], [1, 0, 0]
    logits, target = _logits(probs), torch.tensor([[labels]])
    plain = fusion_loss(logits, target, pos_weight=2.0, dice_weight=0.5)
    assert torch.equal(fusion_loss(logits, target, pos_weight=2.0, dice_weight=0.5,
                                   focal_gamma=0.0), plain)  # fmt: skip
    # (1 - p_t)^2 on each pixel's cross-entropy: 0.2, 0.3 and 0.6 missed.
    expected = (
        (0.2**2 + 2.0 * 0.2**2 * -math.log(0.8))
        + (0.3**2 + 0.3**2 * -math.log(0.7))
        + (0.6**2 + 0.6**2 * -math.log(0.4))
    ) / 3
    focal = fusion_loss(logits, target, pos_weight=2.0, focal_gamma=2.0)
    assert focal.item() == pytest.approx(expected, rel=1e-6)
    assert FusionLoss(HeadConfig(focal_gamma=2.0, pos_weight=2.0))(logits, target).item() == (
        pytest.approx(focal.item())
    )


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_gradient_is_finite_for_saturated_logits(gamma):
    # A 200-logit margin underflows 1 - p_t to exactly 0, where (1 - p_t)^0.5 has no slope.
    logits = torch.tensor([[0.0, 200.0], [0.0, -200.0], [0.0, 0.3]]).T.reshape(1, 2, 1, 3)
    logits.requires_grad_(True)
    loss = fusion_loss(logits, torch.tensor([[[1, 0, 1]]]), focal_gamma=gamma)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert logits.grad[0, :, 0, 2].abs().sum() > 0  # the hard pixel still learns
