"""Console tokens as the proxy reads them: LabOrchestrator's format, minted and verified by the
same Rust code (``proxy-auth``) the proxy runs, so a Python lab backend and the proxy agree.

    from ws_proxy import auth

    token = auth.issue(5, 1, 9, "lab-1", ["ubuntu"], secret_key)
    grant = auth.verify(token, "ubuntu", secret_key)      # raises auth.TokenError
    grant.namespace, grant.user_id, grant.console_role
"""

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from ws_proxy import _native

TokenError = _native.TokenError
"""A refused token (a ``ValueError``); ``.label`` names the reason: ``expired``,
``bad_signature``, ``malformed``, ``vm_not_allowed``, ``unknown_key_id``, ..."""


@dataclass(frozen=True)
class Grant:
    """What a verified token allows: one VM console in one namespace, until ``expires_at``."""

    user_id: Union[int, str]
    lab_id: Union[int, str]
    lab_instance_id: Union[int, str]
    namespace: str
    vmi_name: str
    expires_at: int
    additional_data: Any
    token_id: Optional[str]
    console_role: str
    record: bool


def issue(
    user_id: int,
    lab_id: int,
    lab_instance_id: int,
    namespace: str,
    allowed_vmi_names: Sequence[str],
    secret_key: str,
    expires_in: float = 600.0,
    *,
    additional_data: Any = None,
    token_id: Optional[str] = None,
    console_role: Optional[str] = None,
    record: bool = False,
) -> str:
    """Mints a token like ``generate_auth_token`` (HS256, ``exp`` = now + ``expires_in``).

    ``token_id`` adds a ``jti`` (single-use tokens); ``console_role`` (``"control"`` or
    ``"observer"``) and ``record`` add the ``console`` claim. Names the proxy would refuse
    (a namespace that is not a DNS-1123 label, ...) raise ``ValueError``.
    """
    return _native.issue(
        user_id,
        lab_id,
        lab_instance_id,
        namespace,
        list(allowed_vmi_names),
        secret_key,
        expires_in,
        additional_data_json=None if additional_data is None else json.dumps(additional_data),
        token_id=token_id,
        console_role=console_role,
        record=record,
    )


def verify(
    token: str,
    vmi_name: str,
    secret_key: Optional[str] = None,
    leeway: float = 0.0,
    *,
    public_key_pem: Optional[str] = None,
) -> Grant:
    """Verifies ``token`` for ``vmi_name`` as the proxy does, with the HS256 ``secret_key`` or a
    PEM ``public_key_pem`` (RS256, ES256 or EdDSA by the key's type); raises ``TokenError``."""
    fields = dict(_native.verify(token, vmi_name, secret_key, leeway, public_key_pem=public_key_pem))
    fields["additional_data"] = json.loads(fields.pop("additional_data_json"))
    return Grant(**fields)
