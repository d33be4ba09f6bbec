"""Run scripts/*.py commands one after the other in this one process, each exactly as ``python scripts/X.py ARGS``
would (``runpy`` with ``__name__ == "__main__"``, the script's own argv and environment), and record each exit
status and output. tests/test_readme.py uses it to run every README command without paying Python's and torch's
start-up once per command.

    python tests/helpers/readme_runner.py commands.json results.json
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny convolutions on a shared CPU: threads only spin


def run_one(script: str, args: list[str], env: dict[str, str]) -> dict:
    from tests.helpers.scripts import run_script

    start = time.monotonic()
    result = run_script(Path(script).stem, *args, cwd=os.getcwd(), env=env)
    return {"returncode": result.returncode, "stdout": result.stdout[-4000:], "stderr": result.stderr[-4000:],
            "seconds": round(time.monotonic() - start, 2)}


def main() -> None:
    commands_file, results_file = sys.argv[1:3]
    with open(commands_file) as handle:
        commands = json.load(handle)
    audit = os.environ.get("ART_DIFFUSION_WRITE_AUDIT")
    if audit:  # every write of every command, for tests/test_readme.py's write audit
        from tests.helpers import write_audit

        write_audit.install(audit)
    results = []
    for index, command in enumerate(commands):
        if audit:
            write_audit.mark(str(index))
        results.append(run_one(command["script"], command["args"], command.get("env", {})))
        if audit:
            write_audit.mark("runner")  # the runner's own file below is not the command's
        with open(results_file, "w") as handle:  # after each command: a crash still leaves what ran
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
