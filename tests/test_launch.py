"""The process group a multi-process launch creates first carries the configured
``ddp_timeout``: rank-0-only work (data build, held-out generation, export) may outlive torch's
default without the waiting ranks being killed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

from test_sft import ROOT

RANK_SCRIPT = textwrap.dedent("""
    import torch
    import torch.distributed as dist
    from omegaconf import OmegaConf

    from audsemthinker.distributed.launch import agree_on_run_dir

    cfg = OmegaConf.create({"run_dir": "outputs/x", "train": {"sft": {"ddp_timeout": 4321}}})
    agree_on_run_dir(cfg)
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    print("TIMEOUT", int(backend.options._timeout.total_seconds()), flush=True)
    dist.barrier()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_process_group_gets_the_configured_ddp_timeout(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port, "ACCELERATE_USE_CPU": "true",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
        assert "TIMEOUT 4321" in out, out[-3000:]
