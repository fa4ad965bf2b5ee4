"""Sweep jobs that start their own ranks: a Hydra launcher (submitit on SLURM, or its local
executor) runs one process per job; that process runs ``accelerate launch`` for the job.

    python scripts/sft.py -m hydra/launcher=slurm \
        launch.accelerate_config=configs/accelerate/ddp.yaml train.sft.learning_rate=1e-4,2e-4

Each job's folder (``<hydra.sweep.dir>/<job number>``) is the run folder of all its ranks: the
ranks get the job's own overrides plus ``hydra.run.dir=<job folder>``. A job whose ranks fail
records ``job_status.json`` there and returns, so the other jobs finish and the sweep summary
(``audsemthinker/distributed/sweep.py``) lists it as failed; the sweep then exits non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

LAUNCHED_ENV = "AUDSEM_LAUNCHED"
"""Set in the ranks a job started, so they train instead of launching again."""
STATUS_FILE = "job_status.json"
"""A failed job's record in its folder: ``status``, ``error`` (read by the sweep summary)."""


def write_status(job_dir: str | os.PathLike, status: str, error: str) -> Path:
    """Write ``job_status.json`` into a job folder (atomically)."""
    from audsemthinker.files import write_json_atomic

    path = Path(job_dir) / STATUS_FILE
    write_json_atomic(path, {"status": status, "error": error})
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_args(accel_config: str) -> list[str]:
    """Machine rank and main address of a multi-node job from submitit's job environment
    (one task per node); nothing for a one-node config, which gets a free local port instead
    (jobs of a local sweep run side by side)."""
    import yaml

    nodes = int((yaml.safe_load(Path(accel_config).read_text()) or {}).get("num_machines", 1))
    if nodes <= 1:
        return ["--main_process_port", str(_free_port())]
    import submitit

    env = submitit.JobEnvironment()
    return ["--num_machines", str(env.num_nodes), "--machine_rank", str(env.node),
            "--main_process_ip", env.hostnames[0]]


def relaunch(cfg: DictConfig, script: str | os.PathLike) -> bool:
    """Run this job's ranks through ``accelerate launch`` when ``launch.accelerate_config`` is
    set and this process is not already one of them; True when it did (the caller returns).

    Raises:
        RuntimeError: the ranks failed in a single run (in a sweep the failure is recorded in
            the job folder instead, see the module docstring).
    """
    accel = OmegaConf.select(cfg, "launch.accelerate_config", default=None)
    if not accel or os.environ.get(LAUNCHED_ENV):
        return False
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    extra = [str(a) for a in OmegaConf.select(cfg, "launch.accelerate_args", default=[]) or []]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accel),
           *_node_args(str(accel)), *extra, str(script), *hc.overrides.task,
           f"hydra.run.dir={job_dir}"]
    log.info("job %s: %s", job_dir, " ".join(cmd))
    out = job_dir / "ranks.log"
    with out.open("w") as f:
        rc = subprocess.run(cmd, env={**os.environ, LAUNCHED_ENV: "1"}, stdout=f,
                            stderr=subprocess.STDOUT).returncode
    if rc == 0:
        return True
    tail = out.read_text()[-2000:]
    if hc.mode != RunMode.MULTIRUN:
        raise RuntimeError(f"accelerate launch exited with {rc} (log: {out}):\n{tail}")
    write_status(job_dir, "failed", f"accelerate launch exited with {rc}; see {out.name}")
    log.error("job %s failed (accelerate launch exited with %d); see %s", job_dir, rc, out)
    return True


def status_of(job_dir: str | os.PathLike) -> dict | None:
    """The job's recorded status (``job_status.json``), or None."""
    path = Path(job_dir) / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
