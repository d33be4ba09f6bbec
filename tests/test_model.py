import pytest
import torch

from art_diffusion.nets import ConvDiffusionModel


def test_article_width_has_the_articles_parameter_count():
    assert sum(p.numel() for p in ConvDiffusionModel().parameters()) == 742_659


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (128, 128)])
def test_output_matches_input_shape_and_lies_in_unit_range(size):
    model = ConvDiffusionModel(base_channels=4)
    x = torch.rand(2, 3, *size)
    y = model(x)
    assert y.shape == x.shape
    assert 0.0 <= y.min() and y.max() <= 1.0


def test_skip_connections_are_additive_at_each_level():
    model = ConvDiffusionModel(base_channels=4).eval()
    levels = {}
    for name in ("enc1", "enc2", "enc3", "dec1", "dec2"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: levels.__setitem__(name, o))
    model(torch.rand(1, 3, 32, 32))
    assert levels["enc1"].shape == (1, 4, 16, 16)
    assert levels["enc2"].shape == (1, 8, 8, 8)
    assert levels["enc3"].shape == (1, 16, 4, 4)
    assert levels["dec1"].shape == levels["enc2"].shape
    assert levels["dec2"].shape == levels["enc1"].shape


@pytest.mark.parametrize("size", [(30, 32), (64, 100)])
def test_sides_not_divisible_by_8_are_refused_with_the_size(size):
    with pytest.raises(ValueError, match=f"{size[0]}x{size[1]}"):
        ConvDiffusionModel(base_channels=4)(torch.rand(1, 3, *size))
