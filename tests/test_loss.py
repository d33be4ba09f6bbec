import pytest
import torch
import torch.nn.functional as F

from art_diffusion.losses import HybridLoss
from art_diffusion.nets import ConvDiffusionModel
from art_diffusion.nets.vgg import IMAGENET_MEAN, IMAGENET_STD, VGG16Features, load_vgg16_state


def _normalise(x):
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def test_zero_perceptual_weight_is_pure_mse_in_imagenet_space_and_builds_no_vgg():
    loss = HybridLoss(perceptual_weight=0.0, vgg_weights="imagenet")  # imagenet would need a download: never touched
    assert loss.perceptual is None
    out, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    parts = loss(out, target)
    assert set(parts) == {"loss", "mse"}
    torch.testing.assert_close(parts["loss"], F.mse_loss(_normalise(out), _normalise(target)))


def test_total_is_the_weighted_sum_of_the_parts():
    with pytest.warns(UserWarning, match="random"):
        loss = HybridLoss(mse_weight=0.3, perceptual_weight=0.7, vgg_weights="random")
        out, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
        parts = loss(out, target)
    torch.testing.assert_close(parts["loss"], 0.3 * parts["mse"] + 0.7 * parts["perceptual"])
    vgg = loss.perceptual.vgg
    expected = F.mse_loss(vgg(_normalise(out)), vgg(_normalise(target)))
    torch.testing.assert_close(parts["perceptual"], expected)


@pytest.mark.filterwarnings("ignore:.*random.*")
def test_vgg_is_frozen_outside_the_state_and_gradients_reach_only_the_model():
    model = ConvDiffusionModel(base_channels=4)
    loss = HybridLoss(vgg_weights="random")
    x = torch.rand(2, 3, 32, 32)
    loss(model(x), x)["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    assert list(loss.parameters()) == []          # nothing for an optimizer to pick up
    assert loss.state_dict() == {}                # nothing of the VGG in a checkpoint
    assert not loss.perceptual.vgg.training


@pytest.mark.filterwarnings("ignore:.*random.*")
def test_vgg_slice_matches_torchvision_features_16():
    from torchvision.models import vgg16

    state = load_vgg16_state("random", 16)
    reference = vgg16(weights=None).features[:16].eval()
    reference.load_state_dict(state)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(VGG16Features(state, 16)(x), reference(x))
