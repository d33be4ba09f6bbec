"""The shape of the package: a short root of concepts, a map that names them all, every module importable, and
networks and maths that know nothing of the config layout (its rules live in run/validate.py)."""

import ast
import importlib
import pkgutil
import re

import art_diffusion
from tests.helpers.config import DOC_PAGES, REPO

PACKAGE = REPO / "src" / "art_diffusion"
#: Config groups whose dotted keys a message would name (model.prediction, data.image_size, ...).
CONFIG_KEY = re.compile(r"\b(model|data|loss|optim|scheduler|trainer|callbacks|logger)\.[a-z_]+")


def _entries() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")


def test_the_package_root_is_a_short_list_of_concepts():
    entries = _entries()
    assert len(entries) <= 12, entries
    assert [e for e in entries if e.endswith(".py")] == ["__init__.py"]  # concepts are packages


def test_the_package_map_names_every_entry():
    for entry in _entries():
        if entry != "__init__.py":
            assert re.search(rf"^    {re.escape(entry)}/ ", art_diffusion.__doc__, re.M), entry


def test_every_module_imports():
    names = [m.name for m in pkgutil.walk_packages(art_diffusion.__path__, "art_diffusion.")]
    assert len(names) > 60
    for name in names:
        importlib.import_module(name)


def _raised_messages(path) -> list[tuple[str, str]]:
    """(exception name, message text) of every ``raise X(...)`` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
            text = " ".join(c.value for c in ast.walk(node.exc) if isinstance(c, ast.Constant)
                            and isinstance(c.value, str))
            found.append((node.exc.func.id, text))
    return found


def test_networks_maths_and_losses_raise_plain_errors_naming_no_config_key():
    plain = [*PACKAGE.glob("nets/*.py"), *PACKAGE.glob("diffusion/*.py"), *PACKAGE.glob("losses/*.py")]
    weights = list(PACKAGE.glob("nets/vgg/*.py"))  # also used by LPIPS and FD-VGG: no key of the loss's either
    assert len(plain) > 10 and len(weights) > 4
    for path in plain + weights:
        for name, text in _raised_messages(path):
            assert not CONFIG_KEY.search(text), f"{path.relative_to(REPO)}: {name}({text!r}) names a config key"
            # a missing optional package is the one user error a class raises itself; the weights resolver's
            # errors are about files the user names
            assert path in weights or name in ("ValueError", "TypeError", "KeyError") or "optional" in text, (
                path, name, text)


def _calls(path, dotted: str) -> int:
    """How many calls of ``dotted`` (``torch.load``) a file makes."""
    module, name = dotted.split(".")
    return sum(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name
               and isinstance(node.func.value, ast.Name) and node.func.value.id == module
               for node in ast.walk(ast.parse(path.read_text())))


def test_torch_files_are_read_and_written_by_the_one_mechanism():
    """Every torch.load of a file checks the zip's CRC-32s first (storage.load_torch; checkpoints.loading adds its
    messages around the same check) and every torch.save is atomic (storage.save_torch): a new reader or writer
    cannot skip them."""
    allowed = {"torch.load": {"storage/files.py", "checkpoints/loading.py"}, "torch.save": {"storage/files.py"}}
    for dotted, files in allowed.items():
        found = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if _calls(p, dotted)}
        assert found == files, (dotted, found)


def test_every_page_of_the_docs_is_run_and_linked_from_the_readme():
    pages = {str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")}
    assert pages == set(DOC_PAGES) - {"README.md"}, "add the new page to DOC_PAGES"
    readme = (REPO / "README.md").read_text()
    assert all(f"]({page})" in readme for page in pages)
    assert len(readme.splitlines()) <= 350  # a map, not a manual
