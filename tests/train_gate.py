"""`p2g` in a real process that pauses at one point of training, so that a test can signal it exactly there.

    python -m tests.train_gate POINT FOLDER ARGS...     (ARGS: what follows `p2g`, e.g. train --out RUN ...)

POINT is `start-up` (preparing the run, before any step), `step:N` (inside this process's N-th optimisation step,
between its forward and backward pass) or `validation` (inside the first validation). On reaching it the process
writes FOLDER/reached and waits until FOLDER/go exists; the test sends its signal, then creates FOLDER/go. Nothing
else changes: the process runs `workflows.cli.main`, signal handlers included.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def wait_at_gate(folder: Path) -> None:
    (folder / "reached").touch()
    while not (folder / "go").exists():
        time.sleep(0.01)  # a signal's handler runs here (and may raise, as SIGTERM at start-up does)


def install(point: str, folder: Path) -> None:
    """Wrap the library function where `point` lies so that it waits at the gate there."""
    from sr_model.training import loop as training
    from sr_model.training import validation

    if point == "start-up":
        prepare = training._prepare

        def gated_prepare(*args, **kwargs):
            wait_at_gate(folder)
            return prepare(*args, **kwargs)

        training._prepare = gated_prepare
    elif point.startswith("step:"):
        target, loss, calls = int(point.split(":")[1]), training.reconstruction_loss, []

        def gated_loss(*args, **kwargs):
            out = loss(*args, **kwargs)
            calls.append(1)
            if len(calls) == target:
                wait_at_gate(folder)
            return out

        training.reconstruction_loss = gated_loss
    elif point == "validation":
        validate, calls = validation.Validator.__call__, []

        def gated_validate(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                wait_at_gate(folder)
            return validate(self, *args, **kwargs)

        validation.Validator.__call__ = gated_validate
    else:
        raise SystemExit(f"unknown gate point {point!r}")


if __name__ == "__main__":
    install(sys.argv[1], Path(sys.argv[2]))
    sys.argv = ["p2g", *sys.argv[3:]]
    from workflows.cli import main

    main()
