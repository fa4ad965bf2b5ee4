"""resume=auto trusts a checkpoint only when it is whole: a newer folder whose weights, optimizer
or RNG file is cut or missing is passed over for the previous complete one (SFT and GRPO both
resume through ``train.common.resolve_resume``)."""

from __future__ import annotations

import pytest
from test_sft import _checkpoint

from audsemthinker.train.common import find_resume_checkpoint, resolve_resume


def _cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("damage", ["cut_weights", "no_weights", "cut_optimizer", "no_rng",
                                    "cut_rng", "weights_header_only"])
def test_resume_auto_falls_back_past_a_damaged_checkpoint(tmp_path, damage):
    good = _checkpoint(tmp_path, 10)
    bad = _checkpoint(tmp_path, 20)
    if damage == "cut_weights":
        _cut(bad / "adapter_model.safetensors")
    elif damage == "weights_header_only":
        _cut(bad / "adapter_model.safetensors", keep=0.9)
    elif damage == "no_weights":
        (bad / "adapter_model.safetensors").unlink()
    elif damage == "cut_optimizer":
        _cut(bad / "optimizer.pt")
    elif damage == "no_rng":
        (bad / "rng_state.pth").unlink()
    elif damage == "cut_rng":
        _cut(bad / "rng_state.pth")
    assert find_resume_checkpoint(tmp_path) == str(good)
    assert resolve_resume("auto", tmp_path) == str(good)
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_resume(str(bad), tmp_path)
    from audsemthinker.integrity import checkpoint_problem

    assert checkpoint_problem(bad) is not None and checkpoint_problem(good) is None


def test_sharded_weights_need_every_shard(tmp_path):
    import json

    d = _checkpoint(tmp_path, 5)
    (d / "adapter_model.safetensors").rename(d / "model-00001-of-00002.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    assert find_resume_checkpoint(tmp_path) is None
    from audsemthinker.integrity import checkpoint_problem

    assert "shards missing" in checkpoint_problem(d)


def test_weights_fingerprint_changes_with_the_weights_not_the_path(tmp_path):
    import shutil

    from audsemthinker.integrity import weights_fingerprint

    a = _checkpoint(tmp_path, 1)
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)
    assert weights_fingerprint(copy) == weights_fingerprint(a) != {}
    retrained = _checkpoint(tmp_path / "other", 2)  # same shapes, other values
    assert weights_fingerprint(retrained)["adapter_model.safetensors"] != \
        weights_fingerprint(a)["adapter_model.safetensors"]

def test_an_fsdp_sharded_state_checkpoint_is_resumable_once_its_metadata_is_written(tmp_path):
    """FSDP's SHARDED_STATE_DICT checkpoints hold no model file: the weights are a
    ``torch.distributed.checkpoint`` folder whose ``.metadata`` is written after the shards."""
    d = _checkpoint(tmp_path, 5)
    (d / "adapter_model.safetensors").unlink()
    shards = d / "pytorch_model_fsdp_0"
    shards.mkdir()
    (shards / "__0_0.distcp").write_bytes(b"\0" * 64)
    (shards / "__1_0.distcp").write_bytes(b"\0" * 64)
    assert find_resume_checkpoint(tmp_path) is None  # shards without metadata: not finished
    (shards / ".metadata").write_bytes(b"\0" * 16)
    assert find_resume_checkpoint(tmp_path) == str(d)
