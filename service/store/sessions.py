"""Portal sign-in sessions: a browser signs in with an API key once and then carries a
random token in a cookie. Only the token's sha256 is stored, beside the key it stands for;
a session ends at its expiry, at sign-out, or as soon as its key is revoked."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from service.store.db import Database
from service.store.models import ApiKey, PortalSession, utcnow


@dataclass(frozen=True, kw_only=True)
class SessionOwner:
    team_id: str
    key_id: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionsRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def start(self, *, key_id: str, team_id: str, ttl_s: float) -> str:
        """A new session for the key; returns the token (shown to the browser only)."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        with self.db.session() as session:
            session.add(PortalSession(token_hash=token_hash(token), key_id=key_id,
                                      team_id=team_id, created_at=now,
                                      expires_at=now + timedelta(seconds=ttl_s)))
            session.commit()
        return token

    def owner(self, token: str) -> SessionOwner | None:
        """Whose session ``token`` is; ``None`` if unknown, expired or its key revoked."""
        with self.db.session() as session:
            row = session.execute(
                select(PortalSession.team_id, PortalSession.key_id)
                .join(ApiKey, ApiKey.id == PortalSession.key_id)
                .where(PortalSession.token_hash == token_hash(token),
                       PortalSession.expires_at > utcnow(), ApiKey.revoked_at.is_(None))
            ).one_or_none()
        return None if row is None else SessionOwner(team_id=row.team_id, key_id=row.key_id)

    def end(self, token: str) -> None:
        with self.db.session() as session:
            session.execute(delete(PortalSession)
                            .where(PortalSession.token_hash == token_hash(token)))
            session.commit()

    def purge_expired(self) -> int:
        with self.db.session() as session:
            result = session.execute(delete(PortalSession)
                                     .where(PortalSession.expires_at <= utcnow()))
            session.commit()
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
