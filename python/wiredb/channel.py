"""wiredb 0.7.1's module path `wiredb.channel`: the same names, from their modules here."""

from ._channel import AsyncChannel as AsyncChannel
from ._channel import Channel as Channel

__all__ = ["AsyncChannel", "Channel"]
