"""Compatibility alias: adversarial training moved to :mod:`lightning_tickets.tasks.adversarial`.

Kept so that ``from lightning_tickets.adversarial import AdversarialConfig`` (code and notebooks written before
the move) and checkpoints whose hyper-parameters name ``lightning_tickets.adversarial.AdversarialConfig`` still
load.

Example:
    >>> from lightning_tickets.adversarial import AdversarialConfig
    >>> AdversarialConfig.__module__
    'lightning_tickets.tasks.adversarial'
"""

from lightning_tickets.tasks.adversarial import *  # noqa: F403
from lightning_tickets.tasks.adversarial import __all__  # noqa: F401
