"""Ray token authentication, always on (DESIGN decision 7, infra.md C.4).

With `RAY_AUTH_MODE=token` Ray's GCS refuses to start unless a token exists (in
`RAY_AUTH_TOKEN`, the file named by `RAY_AUTH_TOKEN_PATH`, or `~/.ray/auth_token`). `ensure_token`
creates the default file (mode 600) when none is configured, so a fresh laptop or CI run works
with auth on. The token does not encrypt traffic: firewall Ray's ports and reach dashboards over
SSH port forwarding; never bind them to all interfaces.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def default_token_path() -> Path:
    return Path(os.environ.get("HOME", "~")).expanduser() / ".ray" / "auth_token"


def token_source() -> str | None:
    """Where Ray will find its token: 'env', 'path', 'file', or None when there is none."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "env"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path and Path(path).is_file():
        return "path"
    if default_token_path().is_file():
        return "file"
    return None


def ensure_token() -> str:
    """Make sure token auth can start; returns where the token comes from."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    source = token_source()
    if source is not None:
        return source
    path = (
        Path(os.environ["RAY_AUTH_TOKEN_PATH"])
        if os.environ.get("RAY_AUTH_TOKEN_PATH")
        else default_token_path()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return "created " + str(path)


def read_token() -> str | None:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    for p in (os.environ.get("RAY_AUTH_TOKEN_PATH"), str(default_token_path())):
        if p and Path(p).is_file():
            return Path(p).read_text().strip()
    return None
