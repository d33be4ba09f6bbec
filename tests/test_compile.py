"""Precision, memory format and torch.compile options of the module, trained through the real config on CPU."""

import pytest
import torch
from hydra.utils import instantiate

from art_diffusion.nets import ConvDiffusionModel
from art_diffusion.run.train import train

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")

FEW_STEPS = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "test=false"]


def test_channels_last_converts_the_network_and_keeps_its_outputs(compose_cfg):
    torch.manual_seed(0)
    plain = instantiate(compose_cfg().model).eval()
    nhwc = instantiate(compose_cfg("model.channels_last=true").model).eval()
    nhwc.net.load_state_dict(plain.net.state_dict())
    assert nhwc.net.enc1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.net.enc1[0].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(images), plain(images), rtol=1e-4, atol=1e-5)


def test_bf16_mixed_precision_with_channels_last_trains(compose_cfg):
    metrics = train(compose_cfg("trainer.precision=bf16-mixed", "model.channels_last=true", *FEW_STEPS))
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert 0 < metrics["val/psnr"] < 100


def test_compiled_network_checkpoint_loads_into_a_plain_model(compose_cfg, tmp_path):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    # One training step, no validation: a single graph (forward + backward) to compile. aot_eager traces the network
    # exactly as the default inductor backend does but skips C++ code generation (over a minute on 2 cores).
    train(compose_cfg("model.compile=true", "model.compile_options={backend: aot_eager}", "trainer.max_epochs=1",
                      "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=0",
                      "+trainer.num_sanity_val_steps=0", "test=false"))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the network really went through dynamo

    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])
    net_state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    plain = ConvDiffusionModel(base_channels=4)
    plain.load_state_dict(net_state, strict=True)
    torch._dynamo.reset()
