"""An evaluation resumes only onto predictions of the same weights, and never runs twice at
once in one run folder: a model retrained at the same path (the pipeline's ``sft/merged``) is
refused, and a second live evaluation is refused while a lock left by a killed one is not."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
from test_eval_harness import make_cfg
from test_sft import ROOT

from audsemthinker.eval import harness


@pytest.fixture()
def bench(synthetic_dir, monkeypatch):
    monkeypatch.setattr(harness, "generate_rows",
                        lambda model, collator, rows, decoding: ["<answer>A</answer>"] * len(rows))
    return {"syn": {"scorer": "accuracy", "rows": str(synthetic_dir / "test.jsonl"),
                    "limit": 2}}


def test_resume_onto_a_model_retrained_at_the_same_path_is_refused(tiny_thinker_dir, tmp_path,
                                                                    bench):
    import torch
    from safetensors.torch import load_file, save_file

    model_dir = tmp_path / "merged"
    shutil.copytree(tiny_thinker_dir, model_dir)
    run = tmp_path / "eval"
    harness.run_eval(make_cfg(model_dir, run, bench))
    harness.run_eval(make_cfg(model_dir, run, bench))  # same weights: resumes
    weights = model_dir / "model.safetensors"
    retrained = {k: v + torch.ones_like(v) if v.is_floating_point() else v
                 for k, v in load_file(str(weights)).items()}
    save_file(retrained, str(weights), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=re.escape("different settings (['model'] differ)")):
        harness.run_eval(make_cfg(model_dir, run, bench))


HOLDER = textwrap.dedent("""
    import sys, time
    from audsemthinker.eval.lock import run_lock
    with run_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


def test_a_second_live_evaluation_is_refused_and_a_dead_ones_lock_is_not(tiny_full_dir,
                                                                          tmp_path, bench):
    from audsemthinker.eval.lock import RunLocked

    run = tmp_path / "eval"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f'"pid": {holder.pid}'):
            harness.run_eval(make_cfg(tiny_full_dir, run, bench))
        assert not (run / "predictions").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed holder's file is still there, naming a dead pid: the lock is stale, not held.
    assert str(holder.pid) in (run / ".eval.lock").read_text()
    result = harness.run_eval(make_cfg(tiny_full_dir, run, bench))["syn"]
    assert result["n_predicted"] == 2
