"""The bad-file report: every skipped file once, with its reason, in ``bad_files.csv`` and a one-line summary."""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from pathlib import Path

from art_diffusion.storage import atomic_write

log = logging.getLogger(__name__)

REPORT_NAME = "bad_files.csv"
_LOG_AT_MOST = 20  # files named one per line in the log; the CSV always has them all


def printable(text: str) -> str:
    """``text`` safe to write as UTF-8 and to print: a file name that is not valid UTF-8 (held by Python with
    surrogate escapes) shows its raw bytes as ``\\xNN`` instead of crashing the writer."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # lone surrogates that are not escapes of bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class BadFileReport:
    """Skipped files by path. ``add`` dedups, so reports from several workers (or epochs) count once."""

    def __init__(self, report_dir: str | Path | None) -> None:
        self.path = Path(report_dir) / REPORT_NAME if report_dir else None
        self.rows: dict[str, tuple[str, str]] = {}

    def add(self, path: str, reason: str, detail: str) -> bool:
        """Record one skipped file; True if it was not known yet."""
        if path in self.rows:
            return False
        self.rows[path] = (reason, detail)
        return True

    def by_reason(self) -> Counter:
        return Counter(reason for reason, _ in self.rows.values())

    def log_files(self, level: int = logging.INFO) -> None:
        for path, (reason, detail) in sorted(self.rows.items())[:_LOG_AT_MOST]:
            log.log(level, "Skipping %s: %s (%s)", printable(path), reason, printable(detail))
        if len(self.rows) > _LOG_AT_MOST:
            log.log(level, "... and %d more skipped files, all listed in %s", len(self.rows) - _LOG_AT_MOST,
                    self.path or "the report (set data.report_dir to write it)")

    def summary(self, listed: int) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.by_reason().most_common())
        skipped = f"{len(self.rows)} skipped ({reasons})" if self.rows else "0 skipped"
        where = f", see {self.path}" if self.path and self.rows else ""
        return f"{listed - len(self.rows)} of {listed} image files used, {skipped}{where}"

    def write(self) -> None:
        """(Re)write the CSV, sorted by path: columns path, reason, detail. Only rank 0 writes it, so no lock."""
        if self.path is None:
            return
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["path", "reason", "detail"])
        writer.writerows([printable(path), reason, printable(detail)]
                         for path, (reason, detail) in sorted(self.rows.items()))
        atomic_write(self.path, text.getvalue())
