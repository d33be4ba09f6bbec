"""Precision, memory format and torch.compile options of the module, trained through the real config on CPU."""

import pytest
import torch
from hydra.utils import instantiate

from art_diffusion.checkpoints import CONFIG_KEY
from art_diffusion.nets import ConvDiffusionModel
from art_diffusion.run.precision import resolve_precision
from art_diffusion.run.train import train

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")

FEW_STEPS = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "test=false"]


def test_channels_last_converts_the_network_and_keeps_its_outputs(compose_cfg):
    torch.manual_seed(0)
    plain = instantiate(compose_cfg("model.channels_last=false").model).eval()
    nhwc = instantiate(compose_cfg().model).eval()  # channels_last is the default
    nhwc.net.load_state_dict(plain.net.state_dict())
    assert nhwc.net.enc1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.net.enc1[0].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(images), plain(images), rtol=1e-4, atol=1e-5)


def test_auto_precision_is_bf16_only_where_the_hardware_computes_in_bf16(tmp_path):
    with_amx, without = tmp_path / "amx", tmp_path / "plain"
    with_amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert resolve_precision("auto", "cpu", with_amx)[0] == "bf16-mixed"
    assert resolve_precision("auto", "cpu", without)[0] == "32-true"
    assert resolve_precision("auto", "cpu", tmp_path / "absent")[0] == "32-true"  # no /proc/cpuinfo: fp32
    assert resolve_precision("32-true", "cpu", with_amx)[0] == "32-true"  # an explicit value is kept
    if not torch.cuda.is_available():
        assert resolve_precision("auto", "gpu", with_amx)[0] == "32-true"  # a GPU's bf16 is not the CPU's


def test_a_default_run_resolves_auto_logs_it_and_stores_it(compose_cfg, tmp_path, caplog):
    expected, _ = resolve_precision("auto", "cpu")
    cfg = compose_cfg("trainer=cpu", *FEW_STEPS)
    assert cfg.trainer.precision == "auto"
    with caplog.at_level("INFO", logger="art_diffusion.run.precision"):
        train(cfg)
    assert f"trainer.precision=auto -> {expected}" in caplog.text
    stored = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)[CONFIG_KEY]
    assert stored["trainer"]["precision"] == expected  # a resumed run keeps the numerics it started with


def test_under_bf16_autocast_the_loss_and_the_metrics_are_fp32(compose_cfg):
    module = instantiate(compose_cfg().model)
    module.setup("fit")
    vgg_weight = next(b for b in module.loss.perceptual.vgg.buffers() if b.dim() == 4)
    assert vgg_weight.is_contiguous(memory_format=torch.channels_last)  # the VGG follows the network's layout
    images = torch.rand(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(images)
        parts = module.loss(out, images)
        per_image = module.loss.perceptual.per_image(out, images)
    assert out.dtype == torch.bfloat16  # the convolutions did run in bf16
    assert {v.dtype for v in parts.values()} == {torch.float32} and per_image.dtype == torch.float32
    assert module.log_images(images)["reconstructions"].dtype == torch.float32


def test_bf16_mixed_precision_with_channels_last_trains(compose_cfg):
    metrics = train(compose_cfg("trainer.precision=bf16-mixed", "model.channels_last=true", *FEW_STEPS))
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert 0 < metrics["val/psnr"] < 100


@pytest.mark.slow  # inductor compiles C++ in worker processes
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
