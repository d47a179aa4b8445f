"""Changing a tenant's configuration one object at a time, with the whole-document checks.

Every change reads the tenant's configuration document, changes it, and imports it again
(`hotline.tenancy.config_document.import_tenant`): so a single queue, agent or number is checked
against everything else (a queue naming a missing skill, a number leading to a deleted flow), the
change is all or nothing, the configuration revision moves and the switch's directory reloads. Changes
of one tenant are serialised in this process, so two concurrent edits cannot lose one another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hotline.api.context import ApiContext
from hotline.tenancy.config_document import ConfigProblem, ImportResult, export_tenant, import_tenant


class ConfigEditor:
    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, tenant: str) -> asyncio.Lock:
        lock = self._locks.get(tenant)
        if lock is None:
            lock = self._locks[tenant] = asyncio.Lock()
        return lock

    async def document(self, tenant: str) -> dict[str, Any]:
        return await export_tenant(self.context.storage, tenant)

    async def apply(self, tenant: str, change: Callable[[dict[str, Any]], None]) -> ImportResult:
        """Apply `change` (which edits the document in place) to the tenant's configuration."""
        context = self.context
        async with self.lock(tenant):
            document = await export_tenant(context.storage, tenant)
            change(document)
            return await import_tenant(
                context.storage, context.tenancy, tenant, document, directory=context.directory
            )

    async def replace(self, tenant: str, document: dict[str, Any]) -> ImportResult:
        context = self.context
        async with self.lock(tenant):
            return await import_tenant(
                context.storage, context.tenancy, tenant, document, directory=context.directory
            )

    async def set_agent_password(self, tenant: str, agent_id: str, password: str) -> list[ConfigProblem]:
        """A configured agent's new sign-in password (hashed on import, off the event loop)."""

        def change(document: dict[str, Any]) -> None:
            for agent in document.get("agents", []):
                if str(agent.get("id")) == agent_id:
                    agent.pop("password_hash", None)
                    agent["password"] = password
                    return
            raise LookupError(agent_id)

        try:
            result = await self.apply(tenant, change)
        except LookupError:
            return [ConfigProblem(f"agents[{agent_id}]", "no such agent")]
        return result.problems
