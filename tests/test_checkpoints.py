"""Checkpoints a user can trust: nothing in a file runs, broken files say so, and interrupted runs resume exactly."""

import json
import os
import pickle
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from art_diffusion.checkpoints import (
    CONFIG_KEY,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_net,
)
from art_diffusion.checkpoints.registry import UnsafeConfigError
from art_diffusion.run.train import train
from tests.helpers.config import TINY, compose_train_cfg
from tests.helpers.events import duplicate_points
from tests.helpers.scripts import run_script, train_script

pytestmark = pytest.mark.filterwarnings("ignore:.*random.*", "ignore:.*num_workers.*")


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("fmt", ["torch.save", "raw pickle"])
def test_checkpoint_that_runs_code_is_refused(tmp_path, fmt, compose_cfg):
    marker, evil = tmp_path / "pwned", tmp_path / "evil.ckpt"
    payload = {"state_dict": {"net.enc1.0.weight": torch.zeros(1)}, "epoch": RunsCode(marker)}
    if fmt == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload))

    with pytest.raises(UnsafeCheckpointError, match="Refusing to load .*evil.ckpt"):
        load_net(evil)
    with pytest.raises(UnsafeCheckpointError):  # the training entry point checks before Lightning opens it
        train(compose_cfg(f"ckpt_path={evil}"))
    assert not marker.exists()


def test_config_naming_code_outside_the_package_is_refused(tiny_run, tmp_path):
    marker = tmp_path / "pwned"
    checkpoint = load_checkpoint(tiny_run / "checkpoints" / "best.ckpt")
    checkpoint[CONFIG_KEY]["model"]["net"] = {"_target_": "os.system", "command": f"touch {marker}"}
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)  # plain data: weights_only loading alone would accept it

    with pytest.raises(UnsafeConfigError, match="_target_ 'os.system'.* at 'model.net._target_'"):
        load_net(crafted)
    assert not marker.exists()


def test_truncated_or_empty_checkpoint_names_the_file(tiny_run, tmp_path):
    data = (tiny_run / "checkpoints" / "best.ckpt").read_bytes()
    truncated, empty = tmp_path / "truncated.ckpt", tmp_path / "empty.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    empty.write_bytes(b"")
    for path in (truncated, empty):
        with pytest.raises(CorruptCheckpointError, match=f"Cannot read checkpoint {path}.*truncated or damaged"):
            load_net(path)
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        load_net(tmp_path / "missing.ckpt")


def test_checkpoint_of_another_model_names_the_mismatching_keys(tiny_run, tmp_path, compose_cfg):
    best = tiny_run / "checkpoints" / "best.ckpt"
    with pytest.raises(IncompatibleCheckpointError, match=rf"{best} does not fit the configured model: shape "
                       r"mismatch net\.enc1\.0\.weight: checkpoint \(4, 3, 3, 3\) vs model \(8, 3, 3, 3\)"):
        train(compose_cfg("model.net.base_channels=8", f"ckpt_path={best}"))

    checkpoint = load_checkpoint(best)
    del checkpoint["state_dict"]["net.dec3.0.bias"]
    checkpoint["state_dict"]["net.extra"] = torch.zeros(1)
    edited = tmp_path / "edited.ckpt"
    torch.save(checkpoint, edited)
    mismatch = r"missing keys \['dec3.0.bias'\]; unexpected keys \['extra'\]"
    with pytest.raises(IncompatibleCheckpointError, match=mismatch):
        load_net(edited)


def test_checkpoints_are_plain_data_with_config_and_rng_state(tiny_run):
    for path in (tiny_run / "checkpoints").iterdir():
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint[CONFIG_KEY]["model"]["net"]["base_channels"] == 4
        assert set(checkpoint["callbacks"]["RNGStateCheckpoint"]) >= {"python", "numpy", "torch"}


def _read_draws(path: Path) -> dict[int, dict]:
    return {d["epoch"]: d for d in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, demo_root, compose_cfg):
    # StepLR halving every epoch: a scheduler restored wrongly changes the weights
    common = [f"data.root={demo_root}", "trainer.deterministic=true", "trainer.max_epochs=3", "test=false",
              "scheduler.step_size=1", "scheduler.gamma=0.5",
              "+callbacks.crash._target_=tests.helpers.crash.CrashAfterEpoch",
              "trusted_classes=[tests.helpers.crash.CrashAfterEpoch]"]
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    train(compose_cfg(*common, f"+callbacks.crash.log_path={full / 'draws.jsonl'}", output_dir=full))

    killed = train_script(*TINY, *common, "+callbacks.crash.kill_after=0",
                        f"+callbacks.crash.log_path={crashed / 'draws.jsonl'}", f"hydra.run.dir={crashed}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert torch.load(crashed / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0  # end of epoch 0

    resumed = run_script("train", f"resume={crashed}", "trusted_classes=[tests.helpers.crash.CrashAfterEpoch]")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(crashed / "checkpoints" / "last.ckpt", weights_only=True)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (2, b["global_step"])
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["lr_schedulers"] == b["lr_schedulers"]
    for x, y in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(x[k], y[k]) for k in x)
    # the global RNGs continue as if nothing happened
    assert _read_draws(full / "draws.jsonl") == _read_draws(crashed / "draws.jsonl")
    # one TensorBoard run, continued: every epoch's validation point, once
    events = EventAccumulator(str(crashed))
    events.Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [e.step for e in _scalars(full, "val/loss")]
    assert duplicate_points(crashed) == {}  # the killed process's points after last.ckpt are dropped, not doubled
    assert (crashed / ".hydra" / "config.yaml").exists() and list((crashed / ".hydra").glob("resumed_*"))


def _scalars(run: Path, tag: str):
    events = EventAccumulator(str(run))
    events.Reload()
    return events.Scalars(tag)


def test_resume_refuses_to_change_what_is_trained(tiny_run, tmp_path):
    cfg = compose_train_cfg(tmp_path, f"resume={tiny_run}", "model.net.base_channels=8", tiny=False)
    with pytest.raises(ValueError, match=r"\['model.net.base_channels'\] cannot change on resume"):
        train(cfg)
    with pytest.raises(FileNotFoundError, match="resume=.*nowhere: .*nowhere/checkpoints holds no checkpoint"):
        train(compose_train_cfg(tmp_path, f"resume={tmp_path / 'nowhere'}", tiny=False))


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, demo_root, stop, code):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    proc = train_script(*TINY, f"data.root={demo_root}", "trainer.max_epochs=1000", "test=false",
                      "callbacks.reconstructions=null", "trainer.log_every_n_steps=1", f"hydra.run.dir={run}",
                      wait=False)
    try:
        deadline = time.monotonic() + 240
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert last.exists(), proc.communicate()[0][-3000:] if proc.poll() is not None else "no checkpoint in time"
        time.sleep(1.0)  # let it train into a later epoch
        before = torch.load(last, weights_only=True)["global_step"]
        signalled = time.time()
        proc.send_signal(stop)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, output[-3000:]  # 128 + the signal: the job did not finish
    assert "SIGTERM: saved" in output and f"Continue with: python scripts/train.py resume={run}" in output
    assert "Traceback" not in output
    assert json.loads((run / "job.json").read_text())["status"] == "interrupted"
    saved = torch.load(last, weights_only=True)
    assert last.stat().st_mtime >= signalled and saved["global_step"] >= before  # the state at the signal

    resumed = run_script("train", f"resume={run}", f"trainer.max_epochs={saved['epoch'] + 2}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "job.json").read_text())["status"] == "completed"
    assert duplicate_points(run) == {}  # the steps logged after the signal's checkpoint are not shown twice
    assert torch.load(last, weights_only=True)["epoch"] == saved["epoch"] + 1


@pytest.mark.parametrize("content", [None, b"hi\n", b"PK\x03\x04 cut"], ids=["missing", "text", "cut zip"])
def test_a_start_checkpoint_is_read_before_the_run_dir_is_used(tmp_path, content):
    """ckpt_path= of a new run names a file that is missing or no checkpoint: refused while the config is prepared,
    in one line naming the file, before anything is built or written."""
    from art_diffusion import UserError
    from art_diffusion.run.train import prepare_config

    path = tmp_path / "start.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(str(path))) as caught:
        prepare_config(compose_train_cfg(tmp_path / "run", f"ckpt_path={path}"))
    assert "\n" not in str(caught.value)
