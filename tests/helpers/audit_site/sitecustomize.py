"""Installs the write audit of tests/helpers/write_audit.py at interpreter start-up, when its variable is set."""

import os

if os.environ.get("ART_DIFFUSION_WRITE_AUDIT"):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("write_audit", Path(__file__).parents[1] / "write_audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install(os.environ["ART_DIFFUSION_WRITE_AUDIT"])
