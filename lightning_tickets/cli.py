"""``lightning-tickets`` command line: LightningCLI for yaml runs.

Usage::

    lightning-tickets fit --config examples/toy/imp.yaml
    lightning-tickets fit --config toy/imp                           # the example config shipped in the package
    lightning-tickets fit --config examples/toy/imp.yaml --print_config
    lightning-tickets demo                                           # = fit --config toy/imp (about 1 minute)
    lightning-tickets demo easy_vqa/quick                            # needs the demo extra
    lightning-tickets ticket info tickets/round-03.safetensors      # ticket tools: see lightning_tickets.tools
    lightning-tickets --version

``--config NAME`` takes a yaml file or, when no such file exists, the name of an example config shipped with the
package (``toy/imp``, ``easy_vqa/imp``, ``configs/uniter_vqa``, with or without ``.yaml`` and ``examples/``;
``lightning-tickets demo --list`` lists them), so a ``pip install`` needs no clone of the repository.

Any ``LightningModule`` / ``LightningDataModule`` importable by ``class_path`` can be used;
``LotteryTicketCallback`` goes
in ``trainer.callbacks``.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI

from lightning_tickets.__about__ import __version__
from lightning_tickets.paths import example_config, example_configs

#: ``lightning-tickets demo`` without a name runs this shipped config (no extra dependencies, about 1 minute).
DEFAULT_DEMO = "toy/imp"


def cpu_bf16_warning(precision: Any, accelerator: Any, native: bool | None = None) -> str | None:
    """The warning to show when bf16 mixed precision would run on a CPU without native bf16 kernels, else ``None``.

    bf16 autocast halves the step time of the easy-VQA demo on a CPU with AVX512-BF16 or AMX, but on a CPU without
    them (most laptops before 2022, AVX2-only machines) the bf16 matrix products fall back to slow reference code.

    Example:
        >>> cpu_bf16_warning("bf16-mixed", "cpu", native=False)[:42]
        'trainer.precision=bf16-mixed on a CPU with'
        >>> cpu_bf16_warning("32-true", "cpu", native=False) is None
        True
    """
    if not str(precision).startswith("bf16") or str(accelerator) not in ("cpu", "auto"):
        return None
    if str(accelerator) == "auto" and torch.cuda.is_available():
        return None
    if native is None:
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
    if native:
        return None
    return (
        f"trainer.precision={precision} on a CPU without native bf16 kernels (no AVX512-BF16/AMX): bf16 matrix "
        "products will be much slower than float32 here. Pass --trainer.precision 32-true (or set it in the yaml)."
    )


class TicketsCLI(LightningCLI):
    """``LightningCLI`` that also warns about settings that are legal but slow on this machine (bf16 on old CPUs)."""

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        trainer = config.get("trainer", {})
        message = cpu_bf16_warning(trainer.get("precision"), trainer.get("accelerator", "auto"))
        if message:
            warnings.warn(message, UserWarning, stacklevel=2)


def resolve_config_args(argv: Sequence[str]) -> list[str]:
    """``argv`` with every ``--config`` / ``-c`` value that is not an existing file replaced by the shipped example
    config of that name (:func:`~lightning_tickets.paths.example_config`).

    Values that are neither files nor config names (inline yaml such as ``'{trainer: {max_epochs: 1}}'``) are kept
    for LightningCLI.

    Raises:
        FileNotFoundError: a value that looks like a file name (``*.yaml`` or ``group/name``) but is neither an
            existing file nor a shipped config; the message lists the shipped ones.

    Example:
        >>> out = resolve_config_args(["fit", "--config", "toy/imp", "--trainer.max_epochs=1"])
        >>> out[2].endswith("imp.yaml") and out[3]
        '--trainer.max_epochs=1'
    """
    from pathlib import Path

    out = list(argv)
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            index, value, prefix = i + 1, out[i + 1], ""
        elif arg.startswith("--config="):
            index, value, prefix = i, arg[len("--config=") :], "--config="
        else:
            continue
        if Path(value).expanduser().is_file() or not re.fullmatch(r"[\w./\\-]+", value):
            continue
        if value.endswith((".yaml", ".yml")) or "/" in value:
            out[index] = prefix + str(example_config(value))
    return out


def _demo_args(argv: list[str]) -> list[str] | None:
    """``fit --config <shipped config>`` for ``demo [NAME] [overrides]``; ``None`` after printing ``--list``."""
    if argv[:1] in (["--list"], ["-l"]):
        print("\n".join(example_configs()))
        return None
    if argv[:1] in (["-h"], ["--help"]):
        print(
            "usage: lightning-tickets demo [NAME] [--trainer.max_epochs=... ...]\n\n"
            f"Runs `lightning-tickets fit --config NAME` on a config shipped with the package (default {DEFAULT_DEMO};"
            " a group alone means GROUP/imp, e.g. easy_vqa). Further arguments are passed on to fit.\n"
            "  --list   list the shipped configs"
        )
        return None
    name = DEFAULT_DEMO
    if argv and not argv[0].startswith("-"):
        name = argv.pop(0)
        name = name if "/" in name or name.endswith(".yaml") else f"{name}/imp"
    return ["fit", "--config", str(example_config(name)), *argv]


def _epilog() -> str:
    from lightning_tickets.tools import build_parser

    parser = build_parser()
    tools = []
    for action in parser._subparsers._group_actions:  # argparse keeps sub-commands here
        tools += [(f"ticket {c.dest}", c.help or "") for c in action._choices_actions]
    rows = [
        *tools,
        ("demo [NAME]", f"fit a shipped example config (default {DEFAULT_DEMO}; demo --list lists them)"),
        ("--version", "print the version"),
    ]
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"  lightning-tickets {name:<{width}}{text}" for name, text in rows]
    return (
        "other commands:\n"
        + "\n".join(lines)
        + "\n\n--config also takes the name of a shipped example config (toy/imp, easy_vqa/imp, configs/uniter_vqa,"
        " ...)."
    )


def _raw_epilog_formatter() -> type:
    """jsonargparse's help formatter, keeping the line breaks of the epilog (the command table)."""
    import argparse

    from jsonargparse import DefaultHelpFormatter

    class Formatter(DefaultHelpFormatter):
        _fill_text = argparse.RawDescriptionHelpFormatter._fill_text

    return Formatter


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``lightning-tickets`` console script (``LightningCLI`` with subclass modes).

    ``lightning-tickets ticket ...`` dispatches to the ticket tools (:mod:`lightning_tickets.tools`),
    ``lightning-tickets demo [NAME]`` runs a shipped example config, ``--version`` prints the version, and
    ``--config`` accepts shipped config names (:func:`resolve_config_args`).
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "ticket":
        from lightning_tickets.tools import main as tools_main

        raise SystemExit(tools_main(argv[1:]))
    if argv[:1] in (["--version"], ["-V"]):
        print(f"lightning-tickets {__version__}")
        raise SystemExit(0)
    try:
        if argv and argv[0] == "demo":
            demo = _demo_args(argv[1:])
            if demo is None:
                raise SystemExit(0)
            argv = demo
        argv = resolve_config_args(argv)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args is not None or argv != sys.argv[1:]:
        args = argv
    TicketsCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=None if args is None else list(args),
        auto_configure_optimizers=False,
        parser_kwargs={"epilog": _epilog(), "formatter_class": _raw_epilog_formatter()},
    )


if __name__ == "__main__":  # pragma: no cover
    main()
