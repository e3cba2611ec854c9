from typing import Optional, Tuple

from ws_proxy import auth as auth

__version__: str

class WebsocketProxy:
    def __init__(
        self,
        remote_url: str,
        api_path: str,
        local_dev_mode: bool,
        secret_key: str,
        host_path_prefix: Optional[str] = None,
        *,
        ca_file: Optional[str] = None,
        token_file: Optional[str] = None,
        max_sessions: Optional[int] = None,
        drain_timeout: Optional[float] = None,
        reject_style: Optional[str] = None,
        preserve_session: bool = False,
    ) -> None: ...
    def run(self, host: str, port: int) -> None: ...
    def run_in_thread(self, host: str, port: int) -> Tuple[str, int]: ...
    def stop_thread(self) -> None: ...
    @property
    def local_address(self) -> Optional[Tuple[str, int]]: ...
    def metrics(self) -> str: ...
