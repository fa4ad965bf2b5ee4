"""A token resolved from the environment (``${oc.env:...}``) reaches no file of a run: the
config dump and the build report replace every value under a key named token/key/secret/
password, at any depth; names of variables (``api_key_env``) and token counts stay."""

from __future__ import annotations

from omegaconf import OmegaConf

from audsemthinker.data.report import BuildReport
from audsemthinker.train.common import save_config

FAKE = "hf_FAKEtoken0123456789abcdef"


def _files_holding(root, text):
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_env_token_lands_in_no_file_of_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDSEM_TEST_HUB_TOKEN", FAKE)
    cfg = OmegaConf.create({
        "run_dir": str(tmp_path),
        "hub": {"hf_token": "${oc.env:AUDSEM_TEST_HUB_TOKEN}", "repo": "me/model"},
        "logging": {"WANDB_API_KEY": "${oc.env:AUDSEM_TEST_HUB_TOKEN}"},
        "judges": [{"apiKey": "${oc.env:AUDSEM_TEST_HUB_TOKEN}", "api_key_env": "JUDGE_KEY"}],
        "eval": {"decoding": {"max_new_tokens": 8}},
        "data": {"kwargs": {"Password": "${oc.env:AUDSEM_TEST_HUB_TOKEN}", "token": None}},
    })
    assert cfg.hub.hf_token == FAKE  # the interpolation resolves
    save_config(cfg, tmp_path)
    report = BuildReport(name="x", out_dir=str(tmp_path / "data"),
                         kwargs=OmegaConf.to_container(cfg.data.kwargs, resolve=True),
                         meta={"source": {"client_secret": FAKE}, "rows": 3})
    (tmp_path / "data").mkdir()
    report.write(tmp_path / "data", plot=False)
    assert _files_holding(tmp_path, FAKE) == []
    from audsemthinker.redact import REDACTED

    saved = OmegaConf.load(tmp_path / "config.yaml")
    assert saved.hub.hf_token == REDACTED and saved.hub.repo == "me/model"
    assert saved.judges[0].apiKey == REDACTED and saved.judges[0].api_key_env == "JUDGE_KEY"
    assert saved.eval.decoding.max_new_tokens == 8
    assert saved.data.kwargs.token is None  # unset stays visibly unset
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_secret_key_names():
    from audsemthinker.redact import REDACTED, is_secret_key, redact

    for key in ("hf_token", "WANDB_API_KEY", "secretKey", "db-password", "key", "HFToken"):
        assert is_secret_key(key), key
    for key in ("api_key_env", "max_new_tokens", "tokenizer", "pad_token_id", "keys", "kind"):
        assert not is_secret_key(key), key
    assert redact({"a": [{"token": 5, "token_id": 5}]}) == {"a": [{"token": REDACTED,
                                                                    "token_id": 5}]}
