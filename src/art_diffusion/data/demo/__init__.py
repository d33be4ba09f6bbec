"""Built-in demo dataset: procedurally generated, art-like images in ImageFolder layout.

``write_demo_dataset(root)`` writes ``root/<class>/<class>_0000.jpg`` ... for every class in :data:`DEMO_CLASSES`,
so a new user can train without downloading anything. Only numpy and Pillow are used.

Modules: :mod:`.canvas` (colour and noise helpers), :mod:`.drawn` and :mod:`.fields` (the painters, one small
function ``painter(rng, size) -> PIL.Image.Image`` per class), :mod:`.painters` (the class registry and
:func:`render_demo_image`) and :mod:`.writer` (the write-once, locked, crash-safe dataset writer).
"""

from art_diffusion.data.demo.painters import DEMO_CLASSES, render_demo_image
from art_diffusion.data.demo.writer import write_demo_dataset

__all__ = ["DEMO_CLASSES", "render_demo_image", "write_demo_dataset"]
