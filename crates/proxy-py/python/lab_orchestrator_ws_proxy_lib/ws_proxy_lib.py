"""``WebsocketProxy`` where the original library had it; see ``ws_proxy``."""

from ws_proxy import WebsocketProxy

__all__ = ["WebsocketProxy"]
