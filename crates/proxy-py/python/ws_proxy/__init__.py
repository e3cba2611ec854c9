"""ws-proxy: the JWT-authenticated WebSocket proxy for KubeVirt VNC consoles, on its Rust engine.

The class keeps the API of ``lab_orchestrator_ws_proxy_lib.ws_proxy_lib.WebsocketProxy``::

    from ws_proxy import WebsocketProxy

    proxy = WebsocketProxy(remote_url, api_path, local_dev_mode, secret_key, host_path_prefix=None)
    proxy.run(host, port)                      # foreground, until SIGTERM or Ctrl-C
    host, port = proxy.run_in_thread(host, 0)  # background; returns once listening
    proxy.stop_thread()                        # drain and join

``remote_url`` is ``ws://...`` (dev mode, ``kubectl proxy``) or ``wss://host:port`` (in a
cluster: the pod's service-account token and CA are used); ``api_path`` is the VNC path
template with ``{namespace}`` and ``{vmi_name}``; ``secret_key`` is the HS256 secret of the
console tokens; ``host_path_prefix`` is served before ``/{token}/{vmi}``. Keyword-only
settings the original does not have: ``ca_file``, ``token_file`` (move the service-account
files), ``max_sessions``, ``drain_timeout`` (seconds), ``reject_style`` (``auto``, ``http``,
``close``) and ``preserve_session``.

Bad settings raise ``ValueError``, a taken port ``OSError``. The proxy logs through Python's
``logging`` on loggers named after its Rust modules (``proxy_server.engine``, ...); tokens never
appear. ``ws_proxy.auth`` mints and verifies the tokens exactly as the proxy does.
"""

from ws_proxy._native import WebsocketProxy
from ws_proxy import auth

__all__ = ["WebsocketProxy", "auth"]
__version__ = "0.1.0"
