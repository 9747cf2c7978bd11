"""Signed email opt-out links: the token is HMAC-SHA256(secret, attempt_id + address), never guessable.

The secret comes from the environment (AGENTCOLLECT_UNSUBSCRIBE_SECRET, bound with dg.EnvVar on the
sending side and read by the webhook receiver); it is never logged. The link carries the attempt id and the
token only - not the address: the receiver reads the address from the attempt and recomputes the token.
"""

import hashlib
import hmac

SECRET_ENV = "AGENTCOLLECT_UNSUBSCRIBE_SECRET"
UNSUBSCRIBE_PATH = "/webhooks/sendgrid/unsubscribe"


def unsubscribe_token(secret: str, attempt_id: str, address: str) -> str:
    if not secret:
        raise ValueError(f"{SECRET_ENV} is empty: emails cannot carry a working unsubscribe link")
    message = f"{attempt_id}\n{address.strip().lower()}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def token_ok(secret: str | None, attempt_id: str, address: str, token: str | None) -> bool:
    if not secret or not token or not attempt_id or not address:
        return False
    return hmac.compare_digest(unsubscribe_token(secret, attempt_id, address), token)
