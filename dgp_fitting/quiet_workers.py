"""Local workers that do not print a heartbeat failure when their cluster closes.

A local cluster's scheduler lives in the client's process, so a worker's heartbeat can only fail while that process
closes the cluster (Ctrl-C, the end of the job) or has died, which takes the workers with it: nothing to act on.
Yet a worker busy fitting when the scheduler closes logs "Failed to communicate with scheduler during heartbeat"
with two tracebacks, on the terminal after the job's own one-line message (seen under load in the Ctrl-C test of
tests/test_fault_scenario.py). A module of its own because it imports distributed, which the CLI loads only to run.
"""

from __future__ import annotations

import logging

from distributed.diagnostics.plugin import WorkerPlugin

HEARTBEAT_FAILURE = "Failed to communicate with scheduler during heartbeat"


def not_a_heartbeat_failure(record: logging.LogRecord) -> bool:
    """A logging filter: False for a worker's heartbeat-failure record, True for every other."""
    return not record.getMessage().startswith(HEARTBEAT_FAILURE)


class QuietLocalHeartbeats(WorkerPlugin):
    """Installed on every worker of a local cluster (`clusters.connect`): its heartbeat failures are not logged."""

    name = "p2g-quiet-local-heartbeats"

    def setup(self, worker) -> None:
        logging.getLogger("distributed.worker").addFilter(not_a_heartbeat_failure)
