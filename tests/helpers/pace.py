"""A test-only callback: every training batch takes at least ``seconds``, so a test can signal a run while it trains
on any machine, however fast. Used through ``+callbacks.pace._target_=tests.helpers.pace.Pace``
``+callbacks.pace.seconds=...``."""

import time

import lightning as L


class Pace(L.Callback):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
