"""failover-bot: keeps an Asterisk PBX in service across two servers."""

__version__ = "0.1.0"
