"""The registered networks, in the order they start. Adding one: a module like `telegram.py`, and a line here."""

from __future__ import annotations

from bot.networks import email, matrix, telegram
from bot.networks.base import Needs, NetworkModule

NETWORKS: tuple[NetworkModule, ...] = (telegram.NETWORK, matrix.NETWORK, email.NETWORK)

__all__ = ["NETWORKS", "Needs", "NetworkModule", "by_name"]


def by_name(name: str) -> NetworkModule:
    return next(network for network in NETWORKS if network.name == name)
