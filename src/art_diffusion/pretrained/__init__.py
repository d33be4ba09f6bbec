"""A trained model in one line, and a folder to share it.

- :mod:`~art_diffusion.pretrained.models`: :func:`load_pretrained` (a run dir, a ``.ckpt`` or an exported folder)
  and what it returns, :class:`PretrainedReconstructor` (``reconstruct(images)``) and :class:`PretrainedGenerator`
  (``generate(num_images)``), both running the scripts' own code.
- :mod:`~art_diffusion.pretrained.folder`: the exported folder's ``model.safetensors`` and ``config.json``, read
  back with JSON and safetensors only, config.json checked key by key.
- :mod:`~art_diffusion.pretrained.card`: its ``README.md`` model card.
- :mod:`~art_diffusion.pretrained.export`: ``export(cfg)``, what ``scripts/export.py`` runs (also ``model.onnx``).
"""

from art_diffusion.pretrained.folder import PretrainedFolderError
from art_diffusion.pretrained.models import PretrainedGenerator, PretrainedReconstructor, load_pretrained

__all__ = ["PretrainedFolderError", "PretrainedGenerator", "PretrainedReconstructor", "load_pretrained"]
