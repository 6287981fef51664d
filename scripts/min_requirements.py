"""Print the declared dependency floors of ``pyproject.toml`` as ``name==floor`` pins, one per line.

``make test-min`` installs these into ``.venv-min`` so the suite runs against the oldest versions the project
claims to support. Packages named with ``--skip`` (torch by default: its build is chosen per machine) are left out.

Example::

    python scripts/min_requirements.py            # lightning==2.4 ... (one pin per line)
    python scripts/min_requirements.py --skip ''  # torch too
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

_REQ = re.compile(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$")


def dependencies(pyproject: Path) -> list[str]:
    """The ``[project] dependencies`` strings of ``pyproject``."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pip vendors tomli
        from pip._vendor import tomli as tomllib  # type: ignore[no-redef]
    with pyproject.open("rb") as fh:
        return list(tomllib.load(fh)["project"]["dependencies"])


def floor_pins(requirements: list[str], skip: set[str]) -> list[str]:
    """``name[extras]==floor`` for every requirement with a ``>=`` floor whose name is not in ``skip``.

    Example:
        >>> floor_pins(["torch>=2.3,<3", "jsonargparse[signatures]>=4.30", "x"], skip={"torch"})
        ['jsonargparse[signatures]==4.30']
    """
    pins = []
    for req in requirements:
        match = _REQ.match(req)
        if match is None:
            raise ValueError(f"cannot parse requirement {req!r}")
        name, extras, spec = match.group(1), match.group(2) or "", match.group(3)
        floor = re.search(r">=\s*([^,;\s]+)", spec)
        if floor is None or name.lower() in skip:
            continue
        pins.append(f"{name}{extras}=={floor.group(1)}")
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parents[1] / "pyproject.toml")
    parser.add_argument("--skip", default="torch", help="comma-separated names to leave out (default: torch)")
    args = parser.parse_args(argv)
    skip = {s.strip().lower() for s in args.skip.split(",") if s.strip()}
    print("\n".join(floor_pins(dependencies(args.pyproject), skip)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
