"""lightning-tickets: find lottery tickets in (vision-and-language) transformers with PyTorch Lightning.

Example:
    >>> from lightning_tickets import LotteryTicketCallback, Ticket
    >>> cb = LotteryTicketCallback(target_sparsity=0.7, schedule="linear", rate=0.1, epochs_per_round=1)
    >>> len(cb.sparsities)  # dense round + 7 pruning rounds
    8
"""

from lightning_tickets.__about__ import __version__
from lightning_tickets.callback import LotteryTicketCallback
from lightning_tickets.early_bird import EarlyBird
from lightning_tickets.fixed_ticket import FixedTicketCallback
from lightning_tickets.schedule import round_length, steps_per_round
from lightning_tickets.ticket import Ticket, TicketError

__all__ = [
    "EarlyBird",
    "FixedTicketCallback",
    "LotteryTicketCallback",
    "Ticket",
    "TicketError",
    "__version__",
    "round_length",
    "steps_per_round",
]
