"""trainer=ddp_cpu through scripts/train.py: 2 gloo ranks share one run dir and one TensorBoard run, and stay in sync.

Lightning re-runs the script for rank 1; without art_diffusion.run.cluster.ddp that rank would make its own Hydra run
dir (single run) or run the whole sweep again (multirun).
"""

from pathlib import Path

import pytest
import torch

from tests.helpers.scripts import SHORT, tiny, train_script

pytestmark = pytest.mark.slow  # every test starts DDP processes

PROBE = ["+callbacks.rank_probe._target_=tests.helpers.rank_probe.RankProbe",
         "+callbacks.rank_probe.dirpath=${paths.output_dir}/ranks",
         "trusted_classes=[tests.helpers.rank_probe.RankProbe]"]


def assert_one_synced_ddp_run(run: Path, spawned: bool = True) -> None:
    """``spawned``: Lightning started rank 1 (which then logs to its own file); else srun did, like rank 0."""
    ranks = [torch.load(run / "ranks" / f"rank_{r}.pt", weights_only=True) for r in (0, 1)]
    assert [(p["world_size"], p["global_rank"]) for p in ranks] == [(2, 0), (2, 1)]
    # the ranks trained on different shards of the data...
    assert not torch.equal(ranks[0]["first_batch"], ranks[1]["first_batch"])
    # ...and end with the same network: gradients were averaged, buffers broadcast
    assert ranks[0]["net"].keys() == ranks[1]["net"].keys()
    for name, tensor in ranks[0]["net"].items():
        assert torch.equal(tensor, ranks[1]["net"][name]), name
    # one TensorBoard run, written by rank 0 alone (event file names end in <host>.<pid>.<n>)
    events = list(run.rglob("events.out.tfevents.*"))
    assert events and {p.parent for p in events} == {run}
    assert len({p.name.removesuffix(".hparams").split(".")[-2] for p in events}) == 1
    assert (run / "train_ddp_process_1.log").exists() or not spawned  # rank 1 ran in this dir...
    assert [p.name for p in run.rglob(".hydra")] == [".hydra"]  # ...without a Hydra config dir of its own
    assert (run / "metrics.json").exists() and (run / "checkpoints" / "best.ckpt").exists()


def test_ddp_cpu_single_run(tmp_path, demo_root):
    result = train_script(*tiny(demo_root), *SHORT, "trainer=ddp_cpu", *PROBE, "test=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [p.parent for p in (tmp_path / "outputs").rglob(".hydra")]
    assert len(runs) == 1, runs  # rank 1 made no run dir of its own
    assert_one_synced_ddp_run(runs[0])


def test_ddp_cpu_inside_a_multirun(tmp_path, demo_root):
    sweep = tmp_path / "sweep"
    result = train_script("-m", *tiny(demo_root), *SHORT, "trainer=ddp_cpu", *PROBE, "test=false",
                          "loss.perceptual_weight=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "outputs").exists()  # no rank fell back to a single-run dir
    # rank 1 ran its job only: re-run with the sweep's argv it would launch (and summarise) the sweep again
    output = result.stdout + result.stderr
    assert output.count("Launching 2 jobs") == 1 and output.count("Sweep summary") == 1
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["perceptual_weight=0", "perceptual_weight=1"]
    for job in jobs:  # the second job got a fresh process group, not the first job's dead one
        assert_one_synced_ddp_run(job)
    assert (sweep / "summary.csv").read_text().count("completed") == 2
