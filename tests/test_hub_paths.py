"""Weights by local path, ``package:`` or Hugging Face hub id (lightning_tickets.paths), all offline.

The hub cache is laid out by the tests (``models--org--name/refs/main`` + ``snapshots/<commit>/``, what
``huggingface_hub`` writes), with ``HF_HUB_CACHE`` pointing at it and ``HF_HUB_OFFLINE=1``: nothing touches the network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from lightning_tickets import paths
from lightning_tickets.backbones import Lxmert, Uniter, Vilt
from lightning_tickets.backbones import base as backbones_base
from lightning_tickets.paths import is_hub_id, resolve_local_path, resolve_pretrained_path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out_hub_cache(cache: Path, repo_id: str, files: Path, commit: str = COMMIT, ref: str = "main") -> Path:
    """Copy the files of ``files`` into ``cache`` as huggingface_hub stores a snapshot; return the snapshot dir."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in files.iterdir():
        shutil.copy2(f, snapshot / f.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _tiny_bert(directory: Path) -> BertModel:
    torch.manual_seed(3)
    config = BertConfig(
        vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    bert = BertModel(config)
    bert.save_pretrained(directory)
    return bert


def test_backbones_base_re_exports_the_paths_helpers():
    assert backbones_base.resolve_local_path is paths.resolve_local_path
    assert backbones_base.resolve_pretrained_path is paths.resolve_pretrained_path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bert-base-uncased", True),
        ("unc-nlp/lxmert-base-uncased", True),
        ("dandelin/vilt-b32-mlm@main", True),
        ("org/name@" + COMMIT, True),
        ("/abs/dir", False),
        ("./rel", False),
        ("a/b/c", False),
        ("org--x/name", False),
        ("org/na..me", False),
        ("C:\\weights", False),
        ("", False),
    ],
)
def test_is_hub_id(text, expected):
    assert is_hub_id(text) is expected


def test_local_directory_and_file_win_over_the_hub(tmp_path, offline_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()  # a local directory that also looks like a hub id
    assert resolve_pretrained_path("org/name") == Path("org/name")
    assert resolve_local_path(tmp_path) == tmp_path


def test_cached_snapshot_is_found_offline_by_id_and_by_revision(tmp_path, offline_cache):
    src = tmp_path / "src"
    _tiny_bert(src)
    snapshot = lay_out_hub_cache(offline_cache, "org/tiny-bert", src)
    assert resolve_pretrained_path("org/tiny-bert") == snapshot
    assert resolve_pretrained_path(f"org/tiny-bert@{COMMIT}") == snapshot
    with pytest.raises(FileNotFoundError, match="not in the local hub cache"):
        resolve_pretrained_path("org/tiny-bert@v2")  # an unknown ref is not silently mapped to main


def test_uncached_hub_id_offline_names_the_fix(offline_cache):
    with pytest.raises(FileNotFoundError) as err:
        resolve_pretrained_path("org/absent", what="bert_path")
    message = str(err.value)
    assert "bert_path 'org/absent'" in message and str(offline_cache) in message
    assert "Unset HF_HUB_OFFLINE" in message and "hf download org/absent" in message


def test_resolve_local_path_still_refuses_hub_ids(offline_cache):
    with pytest.raises(FileNotFoundError, match="not an existing local path"):
        resolve_local_path("bert-base-uncased")


def test_snapshot_without_config_is_refused(tmp_path, offline_cache):
    src = tmp_path / "src"
    src.mkdir()
    (src / "vocab.txt").write_text("[PAD]\n")
    lay_out_hub_cache(offline_cache, "org/no-config", src)
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        resolve_pretrained_path("org/no-config")


def test_online_downloads_like_from_pretrained(tmp_path, monkeypatch):
    """Online, the snapshot is fetched through huggingface_hub with from_pretrained's files (safetensors first, then
    pytorch_model*.bin when the repo has no safetensors), into the cache named by HF_HUB_CACHE."""
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    (snapshot / "config.json").write_text("{}")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if any(p.endswith(".bin") for p in kwargs["allow_patterns"]):
            (snapshot / "pytorch_model.bin").write_bytes(b"")
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_pretrained_path("org/old-repo@v1") == snapshot
    assert [c[0] for c in calls] == ["org/old-repo", "org/old-repo"]
    first, second = calls[0][1], calls[1][1]
    assert first["local_files_only"] is False and first["revision"] == "v1"
    assert first["cache_dir"] == str(tmp_path / "cache")
    assert "*.safetensors" in first["allow_patterns"]
    assert "*.json" in first["allow_patterns"] and not any(p.endswith(".bin") for p in first["allow_patterns"])
    assert "pytorch_model*.bin" in second["allow_patterns"]


def test_uniter_bert_path_accepts_a_cached_hub_id(tmp_path, offline_cache):
    src = tmp_path / "src"
    bert = _tiny_bert(src)
    lay_out_hub_cache(offline_cache, "org/tiny-bert", src)
    model = Uniter("tiny", img_dim=6, bert_path="org/tiny-bert")
    ours, theirs = model.state_dict(), bert.state_dict()
    shared = sorted(
        k for k in theirs if k in ours and k not in ("embeddings.position_ids", "embeddings.token_type_ids")
    )
    assert model.load_reports[0].loaded == shared and len(shared) > 30
    for key in shared:
        assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize("cls", [Lxmert, Vilt])
def test_lxmert_and_vilt_accept_a_cached_hub_id(cls, tmp_path, offline_cache):
    torch.manual_seed(0)
    source = cls("tiny", img_dim=8) if cls is Lxmert else cls("tiny")
    src = tmp_path / "src"
    source.save_pretrained(src)
    lay_out_hub_cache(offline_cache, "org/tiny-model", src)
    model = cls.from_pretrained("org/tiny-model")
    for (name, ours), (_, theirs) in zip(model.state_dict().items(), source.state_dict().items()):
        assert torch.equal(ours, theirs), name
    assert model.load_reports[0].missing_keys == []
