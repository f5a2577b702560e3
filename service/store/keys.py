"""Teams and their API keys.

A key looks like ``qs_<8 hex prefix>_<43 chars of secret>``; only its sha256 is stored, and
it is shown once, when issued (``KeysRepo.issue``, which ``quantserve create-key`` calls).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service.store.db import Database
from service.store.models import ApiKey, Team, utcnow

KEY_PREFIX = "qs_"


@dataclass(frozen=True, kw_only=True)
class IssuedKey:
    key: str  # shown once; only its hash is stored
    key_id: str
    team_id: str
    team_name: str


@dataclass(frozen=True, kw_only=True)
class KeyOwner:
    """The key a caller presented, and its team (found by the key's hash)."""

    key_id: str
    team_id: str
    revoked: bool


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeysRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def ensure_team(self, name: str) -> str:
        """The id of the team called ``name``, created if it does not exist."""
        if not name or len(name) > 200:
            raise ValueError(f"team {name=} must be 1 to 200 characters")
        with self.db.session() as session:
            team_id = session.scalar(select(Team.id).where(Team.name == name))
            if team_id is not None:
                return team_id
            team = Team(name=name)
            session.add(team)
            try:
                session.commit()
            except IntegrityError:  # created concurrently
                session.rollback()
                return str(session.scalar(select(Team.id).where(Team.name == name)))
            return team.id

    def issue(self, *, team: str, name: str = "") -> IssuedKey:
        """A new key for team ``team`` (created if needed); the key is in the result only."""
        team_id = self.ensure_team(team)
        prefix = secrets.token_hex(4)
        key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        with self.db.session() as session:
            row = ApiKey(team_id=team_id, name=name, prefix=prefix, key_hash=hash_key(key))
            session.add(row)
            session.commit()
            key_id = row.id
        return IssuedKey(key=key, key_id=key_id, team_id=team_id, team_name=team)

    def revoke(self, key_id: str) -> bool:
        """Revoke the key; False if it is unknown or revoked already."""
        with self.db.session() as session:
            row = session.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = utcnow()
            session.commit()
        return True

    def owner(self, key: str) -> KeyOwner | None:
        """Whose key ``key`` is; ``None`` for a key that was never issued."""
        with self.db.session() as session:
            row = session.execute(
                select(ApiKey.id, ApiKey.team_id, ApiKey.revoked_at)
                .where(ApiKey.key_hash == hash_key(key))
            ).one_or_none()
        if row is None:
            return None
        return KeyOwner(key_id=row.id, team_id=row.team_id, revoked=row.revoked_at is not None)
