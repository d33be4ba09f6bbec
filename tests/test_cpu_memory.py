"""``cpu_memory`` (art_diffusion/run/memory.py): with ``reuse`` the memory of a freed large tensor stays in the
process for the next one (no fresh mapping, no page faults); ``release`` gives it back as glibc does by default.
Checked on the process's own resident set, in a fresh interpreter per setting (the setting cannot be undone)."""

import subprocess
import sys

import pytest

from art_diffusion.run.memory import apply_cpu_memory
from tests.helpers.scripts import script_env

_PROBE = """
import sys, torch
from art_diffusion.run.memory import apply_cpu_memory

def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

for setting in sys.argv[1:]:  # in order, as the jobs of one local multirun would
    print(apply_cpu_memory(setting), file=sys.stderr)
before = resident_mb()
for _ in range(3):  # three steps' worth of 256 MB activations, freed after each
    x = torch.empty(64 * 2**20, dtype=torch.float32).fill_(1.0)
    del x
print(resident_mb() - before)
"""


def _kept_mb(*settings: str) -> tuple[float, str]:
    result = subprocess.run([sys.executable, "-c", _PROBE, *settings], capture_output=True, text=True, timeout=120,
                            env=script_env())
    assert result.returncode == 0, result.stderr[-2000:]
    return float(result.stdout.split()[-1]), result.stderr


@pytest.mark.slow  # starts two interpreters
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's; elsewhere reuse is a no-op")
def test_reuse_keeps_freed_tensor_memory_and_release_gives_it_back():
    kept, said = _kept_mb("reuse")
    assert kept > 200, f"reuse kept only {kept:.0f} MB of a freed 256 MB tensor"
    assert "kept for the next step" in said
    given_back, _ = _kept_mb("release")
    assert given_back < 50, f"release kept {given_back:.0f} MB of a freed 256 MB tensor"
    given_back, said = _kept_mb("reuse", "release")  # a later job of the same process asks for release
    assert given_back < 50 and "glibc's limits restored" in said, (given_back, said)


def test_an_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="cpu_memory='keep' must be one of reuse, release"):
        apply_cpu_memory("keep")
