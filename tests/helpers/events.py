"""What TensorBoard shows of a run, read back with tensorboard's own reader."""

from collections import Counter
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def points(run_dir: Path) -> Counter:
    """How many times TensorBoard shows each (tag, step) of ``run_dir``'s scalars and images (after its own purge of
    what a stopped process logged past a resumed run's checkpoint)."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    seen = Counter((tag, e.step) for tag in tags["scalars"] for e in events.Scalars(tag))
    seen.update((tag, e.step) for tag in tags["images"] for e in events.Images(tag))
    return seen


def duplicate_points(run_dir: Path) -> dict:
    """The (tag, step) pairs TensorBoard shows more than once: none in a run, resumed or not."""
    return {point: n for point, n in points(run_dir).items() if n > 1}
