"""A test-only callback: every training batch takes at least ``seconds``, so a test can signal a run while it trains
on any machine, however fast. Used through ``+callbacks.pace._target_=tests.helpers.pace.Pace``
``+callbacks.pace.seconds=...``."""

import time

import lightning as L


class Pace(L.Callback):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_start(self, trainer, pl_module) -> None:
        import logging

        logging.getLogger(__name__).info("Pacing the training batches")  # a test waits for the line, then signals

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)


class PauseAt(L.Callback):
    """Logs ``Pausing in <hook>`` and sleeps ``seconds`` in that hook (``on_test_start``, ``on_fit_start``, ...), once:
    a test waits for the line, then signals the run at that moment of its life."""

    def __init__(self, hook: str, seconds: float) -> None:
        self.hook, self.seconds = hook, seconds

        def pause(*args, **kwargs) -> None:
            import logging

            logging.getLogger(__name__).warning("Pausing in %s", hook)
            time.sleep(self.seconds)

        setattr(self, hook, pause)
