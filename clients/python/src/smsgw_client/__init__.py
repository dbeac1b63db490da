"""Typed asyncio client for smsgw (``sms.v1``).

``Client`` holds one channel with the credential on every call, retries that follow
the server's RetryInfo, the typed stubs of every service, and ``watch``, a status
stream that resumes from the last ``event_id`` across disconnects. The messages and
enums are the generated ``sms.v1`` modules, installed with this package.
"""

from smsgw_client.client import FINAL_STATUSES, Client, basic_auth
from smsgw_client.retry import RetryPolicy, retry_info_delay, rpc_status

__all__ = [
    "FINAL_STATUSES",
    "Client",
    "RetryPolicy",
    "basic_auth",
    "retry_info_delay",
    "rpc_status",
]
