"""The import path of the Python original (``lab-orchestrator-ws-proxy-lib``), on ws-proxy's
Rust engine: ``from lab_orchestrator_ws_proxy_lib.ws_proxy_lib import WebsocketProxy`` keeps
working when this wheel replaces the original."""
