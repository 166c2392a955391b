"""A one-node SLURM cluster on this host for the `slurm` tests: munged, slurmctld and slurmd started from a temp dir.

Needs root and Debian's slurmctld, slurmd, slurm-client and munge packages (`.ci/run` installs them); where they are
missing the tests skip and say why. The daemons listen on 127.0.0.1 only and are stopped by PID at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scancel", "squeue")


def missing() -> str | None:
    """Why a SLURM cluster cannot be started here, or None."""
    absent = [name for name in DAEMONS if shutil.which(name) is None]
    if absent:
        return (
            f"SLURM not installed ({', '.join(absent)} missing; .ci/run installs slurmctld slurmd slurm-client munge)"
        )
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SlurmCluster:
    root: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True, timeout: int = 60) -> str:
        """Run a SLURM client command; a failure is retried twice (a busy 2-core host can time out an RPC)."""
        for attempt in range(3):
            done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
            if not done.returncode or not check:
                return done.stdout
            time.sleep(1 + attempt)
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")

    def jobs(self) -> list[str]:
        """IDs of the jobs queued or running."""
        return self.run("squeue", "-h", "-o", "%i").split()


def start(root: Path) -> SlurmCluster:
    """Write the configuration into `root`, start the three daemons and wait until the node is idle."""
    host = socket.gethostname().split(".")[0]
    for folder in ("state", "spool"):
        (root / folder).mkdir(parents=True)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=p2gtest",
                f"SlurmctldHost={host}(127.0.0.1)",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={root}/munge.sock",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                f"StateSaveLocation={root}/state",
                f"SlurmdSpoolDir={root}/spool",
                f"SlurmctldPidFile={root}/slurmctld.pid",
                f"SlurmdPidFile={root}/slurmd.pid",
                f"SlurmctldLogFile={root}/slurmctld.log",
                f"SlurmdLogFile={root}/slurmd.log",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "MpiDefault=none",
                "ReturnToService=2",
                "SchedulerParameters=sched_interval=1",
                "KillWait=2",
                f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory} State=UNKNOWN",
                "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = SlurmCluster(root, env)
    subprocess.run(
        ["munged", "--force", f"--key-file={key}", f"--socket={root}/munge.sock", f"--pid-file={root}/munged.pid",
         f"--log-file={root}/munged.log", f"--seed-file={root}/munged.seed"],
        check=True, env=env, capture_output=True, timeout=30,
    )  # fmt: skip
    subprocess.run(["slurmctld", "-i"], check=True, env=env, capture_output=True, timeout=30)
    subprocess.run(["slurmd"], check=True, env=env, capture_output=True, timeout=30)
    deadline = time.monotonic() + 60
    while "idle" not in cluster.run("sinfo", "-h", "-o", "%T", check=False):
        if time.monotonic() > deadline:
            stop(cluster)
            raise RuntimeError(f"the SLURM node did not become idle in 60 s; see {root}/slurmctld.log")
        time.sleep(0.5)
    return cluster


def stop(cluster: SlurmCluster) -> None:
    """Cancel what is left and stop the daemons by their PID files."""
    cluster.run("scancel", "--user", "root", check=False)
    for name in ("slurmd", "slurmctld", "munged"):
        pid_file = cluster.root / f"{name}.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
