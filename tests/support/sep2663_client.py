"""Drives a refcache MCP server with the official Python MCP SDK (`mcp`, pinned by tests/mcp_python.rs).

Usage: python sep2663_client.py URL

The SDK has no client for the SEP-2663 tasks extension (`tasks/get`, `tasks/update`, `tasks/cancel`), so the small
extension it needs is here, written on the SDK's own primitives (`ClientExtension`, `ResultClaim`,
`ClientSession.send_request`). Three flows, each asserting as it goes; the last stdout line is a JSON summary
that the Rust test checks too. Any failure raises, and the process exits non-zero.

1. tasks/update: a modern connection (2026-07-28) declares the extension; `Client.call_tool` gets a task and the
   extension resolves it: `tasks/get` until `input_required`, a bad answer (refused with -32602 naming the field),
   then the good answer through `tasks/update`, then `tasks/get` until `completed`.
2. tasks/cancel by hand: a task that waits is cancelled, and an unknown id is -32602.
3. respond_task: a legacy connection (no tasks extension) gets the processing reference, polls
   `get_cached_result` until `input_required` (the question as a structured `input_request`), and answers with the
   `respond_task` tool: a bad answer is a tool error naming the field, then the good one.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, Literal

import mcp.types as types
from mcp import Client, MCPError
from mcp.client import ClaimContext, ClientExtension, ResultClaim

TASKS = "io.modelcontextprotocol/tasks"
PATIENCE = 60.0  # seconds: the longest any awaited event may take on a loaded machine
Status = Literal["working", "input_required", "completed", "failed", "cancelled"]


class CreateTaskResult(types.Result):
    """A tools/call answer with resultType "task"."""

    result_type: Literal["task"]
    task_id: str
    status: Status
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None


class DetailedTask(types.Result):
    """A tasks/get result."""

    result_type: Literal["complete"] = "complete"
    task_id: str
    status: Status
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None
    input_requests: dict[str, dict[str, Any]] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class TaskIdParams(types.RequestParams):
    task_id: str


class UpdateTaskParams(types.RequestParams):
    task_id: str
    input_responses: dict[str, Any]


# `name_param`: SEP-2663 sends the task id as the Mcp-Name header over HTTP (rmcp requires it).
class GetTaskRequest(types.Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    name_param = "taskId"


class UpdateTaskRequest(types.Request[UpdateTaskParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    name_param = "taskId"


class CancelTaskRequest(types.Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    name_param = "taskId"


class Ack(types.Result):
    result_type: Literal["complete"] = "complete"


async def get_task(session: Any, task_id: str) -> DetailedTask:
    return await session.send_request(GetTaskRequest(params=TaskIdParams(task_id=task_id)), DetailedTask)


async def update_task(session: Any, task_id: str, responses: dict[str, Any]) -> Ack:
    request = UpdateTaskRequest(params=UpdateTaskParams(task_id=task_id, input_responses=responses))
    return await session.send_request(request, Ack)


async def get_task_until(session: Any, task_id: str, statuses: set[str]) -> DetailedTask:
    async with asyncio.timeout(PATIENCE):
        while True:
            task = await get_task(session, task_id)
            if task.status in statuses:
                return task
            await asyncio.sleep(0.05)


def question_of(task: DetailedTask) -> tuple[str, dict[str, Any]]:
    """The one open question of a waiting task: its key and its form elicitation."""
    assert task.input_requests and len(task.input_requests) == 1, task
    (key, request), = task.input_requests.items()
    assert request["method"] == "elicitation/create", request
    params = request["params"]
    assert params["mode"] == "form", request
    assert params["requestedSchema"]["properties"]["confirm"]["type"] == "boolean", request
    return key, params


class TasksExtension(ClientExtension):
    """The client side of SEP-2663 that the SDK lacks: resolves a tools/call task by polling and answering."""

    identifier = TASKS

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.bad_answer_error: str | None = None
        self.question: str | None = None
        self.status_message: str | None = None

    def claims(self):
        return (ResultClaim(result_type="task", model=CreateTaskResult, resolve=self._resolve),)

    async def _resolve(self, created: CreateTaskResult, ctx: ClaimContext) -> types.CallToolResult:
        session = ctx.session
        answered: set[str] = set()
        async with asyncio.timeout(PATIENCE):
            while True:
                task = await get_task(session, created.task_id)
                if not self.seen or self.seen[-1] != task.status:
                    self.seen.append(task.status)
                if task.status == "completed":
                    return types.CallToolResult.model_validate(task.result)
                if task.status in ("failed", "cancelled"):
                    raise RuntimeError(f"task {task.task_id} ended {task.status}: {task}")
                if task.status == "input_required":
                    key, params = question_of(task)
                    if key not in answered:
                        self.question = params["message"]
                        self.status_message = task.status_message
                        # A bad answer first: refused, naming the field; the task keeps waiting.
                        try:
                            await update_task(session, task.task_id, {key: {"action": "accept", "content": {"confirm": "yes"}}})
                        except MCPError as e:
                            assert e.code == -32602, e
                            self.bad_answer_error = str(e)
                        else:
                            raise AssertionError("a bad answer was accepted")
                        still = await get_task(session, task.task_id)
                        assert still.status == "input_required", still
                        await update_task(session, task.task_id, {key: {"action": "accept", "content": {"confirm": True}}})
                        answered.add(key)
                await asyncio.sleep((created.poll_interval_ms or 100) / 1000 / 10)


async def through_tasks_update(url: str) -> dict[str, Any]:
    extension = TasksExtension()
    async with Client(url, extensions=[extension]) as client:
        result = await client.call_tool("delete_records", {"count": 3})
        assert not result.is_error, result
        assert result.structured_content["value"] == {"deleted": 3}, result
        assert extension.seen[-2:] == ["input_required", "completed"], extension.seen
        assert extension.bad_answer_error and "`confirm`" in extension.bad_answer_error, extension.bad_answer_error

        # tasks/cancel by hand on a task that waits; an unknown id is -32602.
        created = await client.session.call_tool("delete_records", {"count": 5}, allow_claimed=True)
        assert isinstance(created, CreateTaskResult), created
        await get_task_until(client.session, created.task_id, {"input_required"})
        await client.session.send_request(CancelTaskRequest(params=TaskIdParams(task_id=created.task_id)), Ack)
        cancelled = await get_task(client.session, created.task_id)
        assert cancelled.status == "cancelled", cancelled
        try:
            await get_task(client.session, "refcache:0123456789abcdef0123456789abcdef")
        except MCPError as e:
            assert e.code == -32602, e
        else:
            raise AssertionError("an unknown task was found")
    return {
        "statuses": extension.seen,
        "question": extension.question,
        "status_message": extension.status_message,
        "bad_answer": extension.bad_answer_error,
        "value": result.structured_content["value"],
        "cancelled": cancelled.status,
    }


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


async def poll(client: Client, ref_id: str, done) -> dict[str, Any]:
    async with asyncio.timeout(PATIENCE):
        while True:
            polled = await client.call_tool("get_cached_result", {"ref_id": ref_id})
            if done(polled.structured_content):
                return polled.structured_content
            await asyncio.sleep(0.05)


async def through_respond_task(url: str) -> dict[str, Any]:
    async with Client(url, mode="legacy") as client:
        started = await client.call_tool("delete_records", {"count": 4})
        assert not started.is_error, started
        ref_id = started.structured_content["ref_id"]
        waiting = await poll(client, ref_id, lambda p: p["status"] == "input_required")
        question = waiting["input_request"]
        assert question["message"] == "Delete 4 records?", waiting
        assert question["schema"]["properties"]["confirm"]["type"] == "boolean", waiting
        bad = await client.call_tool("respond_task", {"ref_id": ref_id, "response": {"confirm": "yes"}})
        assert bad.is_error and "`confirm`" in text_of(bad), bad
        good = await client.call_tool("respond_task", {"ref_id": ref_id, "response": {"confirm": True}})
        assert not good.is_error, good
        done = await poll(client, ref_id, lambda p: p.get("is_complete") is True)
        assert done["value"] == {"deleted": 4}, done
        late = await client.call_tool("respond_task", {"ref_id": ref_id, "response": {"confirm": True}})
        assert late.is_error and "complete" in text_of(late), late
    return {"question": question, "bad_answer": text_of(bad), "value": done["value"]}


async def main(url: str) -> None:
    summary = {
        "tasks_update": await through_tasks_update(url),
        "respond_task": await through_respond_task(url),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
