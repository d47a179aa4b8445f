"""Flows with drafts, validation keyed by node and publishing; the whole configuration document exported
(audited) and imported all or nothing (TEN-10/11/12, IVR-15, FM-14)."""

from __future__ import annotations

import yaml

from tests.api.world import World, flow, signed_in


async def test_flow_drafts_are_validated_node_by_node_and_published_as_new_versions(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    listed = (await admin.get("/api/v1/flows")).json()
    assert listed["total"] == 1
    assert listed["items"][0] == {
        "id": "main",
        "name": "Flow main",
        "published_version": 1,
        "draft_version": None,
        "versions": 1,
    }

    broken = flow()
    broken["nodes"][0]["exits"] = {"next": "missing_node"}
    response = await admin.put("/api/v1/flows/main/draft", json=broken)
    assert response.status_code == 422
    fields = response.json()["error"]["fields"]
    assert "missing_node" in fields["welcome"] and "no path" in fields["to_queue"]
    unknown_queue = await admin.put("/api/v1/flows/main/draft", json=flow(queue="nowhere"))
    assert unknown_queue.status_code == 422
    assert unknown_queue.json()["error"]["fields"] == {"to_queue": "queue: no queue 'nowhere'"}
    flow_level = await admin.put("/api/v1/flows/main/draft", json={**flow(), "entry": "nope"})
    assert flow_level.status_code == 422 and "@flow" in flow_level.json()["error"]["fields"]
    mismatch = await admin.put("/api/v1/flows/main/draft", json={**flow(), "id": "other"})
    assert mismatch.status_code == 422 and "@flow" in mismatch.json()["error"]["fields"]

    saved = await admin.put("/api/v1/flows/main/draft", json=flow(greeting="你好"))
    assert saved.status_code == 200 and saved.json() == {"id": "main", "version": 2, "status": "draft"}
    detail = (await admin.get("/api/v1/flows/main")).json()
    assert detail["published"]["version"] == 1 and detail["draft"]["version"] == 2
    assert detail["draft"]["document"]["nodes"][0]["prompts"][0]["text"] == "你好"
    # Calls still get version 1 until the draft is published.
    live = world.directory.flow("acme", "main")
    assert live is not None and live.version == 1

    published = await admin.post("/api/v1/flows/main/publish")
    assert published.status_code == 200 and published.json() == {
        "id": "main",
        "version": 2,
        "status": "published",
    }
    live = world.directory.flow("acme", "main")
    assert live is not None and live.version == 2
    detail = (await admin.get("/api/v1/flows/main")).json()
    assert detail["draft"] is None and [v["status"] for v in detail["versions"]] == ["retired", "published"]
    assert (await admin.post("/api/v1/flows/main/publish")).status_code == 404
    rollback = await admin.post("/api/v1/flows/main/publish", json={"version": 1})
    assert rollback.status_code == 200 and world.directory.flow("acme", "main").version == 1  # type: ignore[union-attr]
    assert (await admin.post("/api/v1/flows/main/publish", json={"version": 9})).status_code == 404
    assert (await admin.get("/api/v1/flows/nowhere")).status_code == 404

    new_flow = await admin.put(
        "/api/v1/flows/survey/draft", json={k: v for k, v in flow("survey").items() if k != "id"}
    )
    assert new_flow.status_code == 200 and new_flow.json()["version"] == 1
    assert (await admin.get("/api/v1/flows")).json()["total"] == 2
    supervisor = await signed_in(world, "acme", "super")
    assert (await supervisor.get("/api/v1/flows/main")).status_code == 200
    assert (await supervisor.put("/api/v1/flows/main/draft", json=flow())).status_code == 403
    actions = [entry["action"] for entry in (await admin.get("/api/v1/audit")).json()["items"]]
    assert "flow.draft" in actions and "flow.publish" in actions


async def test_the_whole_document_exports_audited_and_imports_all_or_nothing(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    exported = await admin.get("/api/v1/config")
    assert exported.status_code == 200
    document = exported.json()
    assert [agent["id"] for agent in document["agents"]] == ["8001", "8002", "8003"]
    as_yaml = await admin.get("/api/v1/config", params={"format": "yaml"})
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text)["queues"][0]["name"] == "sales"

    broken = {**document, "queues": [*document["queues"], {"name": "bad", "strategy": "lottery"}]}
    broken["numbers"] = [{"number": "4001", "target": "flow:ghost"}]
    refused = await admin.put("/api/v1/config", json=broken)
    assert refused.status_code == 422
    fields = refused.json()["error"]["fields"]
    assert "queues[bad].strategy" in fields and "numbers[4001].target" in fields
    assert [queue["name"] for queue in (await admin.get("/api/v1/queues")).json()["items"]] == [
        "sales",
        "support",
    ]

    document["skills"].append({"id": "vip"})
    text = yaml.safe_dump(document, allow_unicode=True)
    imported = await admin.put(
        "/api/v1/config", content=text.encode(), headers={"content-type": "application/yaml"}
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["changed"] == 1
    assert (await admin.get("/api/v1/skills/vip")).status_code == 200
    unparsable = await admin.put(
        "/api/v1/config", content=b"a: [", headers={"content-type": "application/yaml"}
    )
    assert unparsable.status_code == 400 and unparsable.json()["error"]["code"] == "bad_document"

    supervisor = await signed_in(world, "acme", "super")
    assert (await supervisor.get("/api/v1/config")).status_code == 403
    audit = (await admin.get("/api/v1/audit", params={"action": "config.export"})).json()
    assert audit["total"] == 2 and audit["items"][0]["actor"] == "admin"
    assert (await admin.get("/api/v1/audit", params={"action": "config.import"})).json()["total"] == 1
