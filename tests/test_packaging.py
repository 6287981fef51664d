"""The built wheel (license, py.typed, shipped configs, no tests), the configs' single source, the declared floors.

The wheel is built offline (``pip wheel --no-deps --no-build-isolation``, setuptools from the test extra), about 2 s.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from lightning_tickets.paths import CONFIGS_DIR, example_config, example_configs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
_NOT_SOURCES = (".git", ".venv*", "build", "dist", "*.egg-info", "runs", "site", "__pycache__", ".*_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    setuptools = pytest.importorskip("setuptools")
    major = int(setuptools.__version__.split(".")[0])
    assert major >= 77, f"setuptools {setuptools.__version__}: the test extra requires setuptools>=77 (PEP 639)"
    out = tmp_path_factory.mktemp("wheel")
    # a clean copy of the sources: a build/ left in the working tree by an earlier build would leak stale modules
    src = out / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(*_NOT_SOURCES))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-w", str(out)]
        + [str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},  # offline
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (whl,) = out.glob("lightning_tickets-*.whl")
    return whl


def _shipped_yaml() -> list[Path]:
    return sorted(EXAMPLES.glob("*/*.yaml"))


def test_wheel_ships_license_py_typed_and_every_example_config(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert f"{dist_info}/licenses/LICENSE" in names
        assert z.read(f"{dist_info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
        assert "lightning_tickets/py.typed" in names
        assert len(_shipped_yaml()) >= 5
        for path in _shipped_yaml():
            member = f"lightning_tickets/configs/{path.parent.name}/{path.name}"
            assert member in names, member
            assert z.read(member) == path.read_bytes(), member  # the wheel holds the examples/ files themselves
    top = {n.split("/")[0] for n in names}
    assert top == {"lightning_tickets", dist_info}, top  # no tests/, examples/, benchmarks/, scripts/
    assert not any("/tests/" in n or n.endswith("conftest.py") for n in names)
    # the modules are exactly the package's own (nothing from examples/ through the configs link)
    modules = {n for n in names if n.endswith(".py")}
    package = ROOT / "lightning_tickets"
    own = {f"lightning_tickets/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py")}
    own = {n for n in own if not n.startswith("lightning_tickets/configs/")}
    assert modules == own, sorted(modules ^ own)[:10]
    configs = {n for n in names if n.startswith("lightning_tickets/configs/")}
    assert configs == {f"lightning_tickets/configs/{p.parent.name}/{p.name}" for p in _shipped_yaml()}


def test_wheel_metadata_license_classifiers_and_urls(wheel):
    with zipfile.ZipFile(wheel) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(z.read(meta_name).decode())
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    classifiers = meta.get_all("Classifier")
    assert "Framework :: Pytest" not in classifiers and "Typing :: Typed" in classifiers
    assert not any(c.startswith("License ::") for c in classifiers)  # PEP 639: the expression replaces them
    for url in meta.get_all("Project-URL") or []:
        assert url.split(",", 1)[1].strip().startswith("https://"), url


def test_license_is_the_apache_2_text():
    text = (ROOT / "LICENSE").read_text()
    assert text.strip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 190


def test_packaged_configs_are_the_examples_directory():
    """One source: lightning_tickets/configs is examples/ (a symbolic link), so the two cannot drift."""
    assert CONFIGS_DIR.resolve() == EXAMPLES.resolve()
    assert example_configs() == sorted(f"{p.parent.name}/{p.stem}" for p in _shipped_yaml())
    for path in _shipped_yaml():
        name = f"{path.parent.name}/{path.stem}"
        for spelling in (name, name + ".yaml", f"examples/{name}.yaml"):
            assert example_config(spelling).resolve() == path.resolve()
    with pytest.raises(FileNotFoundError, match="toy/imp"):
        example_config("toy/missing")


def test_wheel_runs_a_shipped_config_outside_the_repository(wheel, tmp_path):
    """The unpacked wheel alone (no repository on sys.path, another working directory) resolves and fits toy/imp."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), *deps])
    code = (
        "import lightning_tickets, sys; from lightning_tickets.cli import main; "
        "print('FROM', lightning_tickets.__file__); main(sys.argv[1:])"
    )
    args = [
        "demo",
        "--trainer.max_epochs=10",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--data.init_args.num_samples=128",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"FROM {site}" in proc.stdout
    assert (work / "runs" / "toy" / "tickets" / "summary.json").is_file()  # the yaml's relative ticket_dir


def _min_requirements():
    spec = importlib.util.spec_from_file_location("min_requirements", ROOT / "scripts" / "min_requirements.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_min_requirements_pins_every_declared_floor_but_torch():
    mod = _min_requirements()
    deps = mod.dependencies(ROOT / "pyproject.toml")
    pins = mod.floor_pins(deps, skip={"torch"})
    assert len(pins) == len(deps) - 1 and not any(p.startswith("torch==") for p in pins)
    assert mod.floor_pins(["a>=1,<2", "b[x]>=0.4.1", "c"], skip=set()) == ["a==1", "b[x]==0.4.1"]
