"""Version of the lightning-tickets package."""

__version__ = "0.1.0"
