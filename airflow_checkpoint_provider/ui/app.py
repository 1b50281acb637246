"""The FastAPI app behind the Checkpoints page and API, mounted by the plugin under ``/checkpoints``.

Routes (every one needs an authenticated Airflow user: the UI's session cookie or a bearer token):

* ``GET /ui/`` and ``GET /ui/{id}``: the list and detail pages (HTML, rendered server-side);
* ``GET /api/checkpoints?type=database|workflow|deployment|migration|scheduled``, ``GET /api/checkpoints/{id}``,
  ``GET /api/lkg``: the same as JSON;
* ``POST /api/checkpoints/database``: starts ``checkpoint_scheduled`` and returns its run id;
* ``POST /api/checkpoints/deployment``: starts ``checkpoint_pre_deploy``;
* ``POST /api/restore/{id}``: needs ``confirm`` equal to the id, and starts ``restore_checkpoint``;
* ``POST /api/verify/{id}`` (and the detail page's **Verify now**): starts ``checkpoint_verify`` for that
  checkpoint only;
* ``GET /ui/rollbacks`` and ``GET /api/rollbacks``: the rollback copies in the live stores.

Runs are created through Airflow's own REST API with the caller's token, so that Airflow decides
whether the caller may trigger the DAG and validates the conf against the DAG's Params.
"""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from airflow_checkpoint_provider import settings
from airflow_checkpoint_provider.core.errors import CheckpointError, CheckpointNotFoundError
from airflow_checkpoint_provider.core.store import Store
from airflow_checkpoint_provider.hooks.storage import store_kwargs
from airflow_checkpoint_provider.ui import html, model

PREFIX = "/checkpoints"
#: list views show this many checkpoints (newest first); the API takes ``limit``
PAGE_ROWS = 500

DAGS = {
    "database": "checkpoint_scheduled",
    "deployment": "checkpoint_pre_deploy",
    "restore": "restore_checkpoint",
    "verify": "checkpoint_verify",
}

User = Annotated[Any, Depends(get_user)]


class RunRequest(BaseModel):
    """The conf of the run to start (validated by Airflow against the DAG's Params)."""

    conf: dict[str, Any] = Field(default_factory=dict)
    #: unpause the DAG if it is paused, as the UI's Trigger does by default (a paused DAG's run waits)
    unpause: bool = True


class VerifyRequest(RunRequest):
    """A verification of one checkpoint at ``level`` (empty: ``[checkpoint] verify_level``)."""

    level: str | None = None


class RestoreRequest(RunRequest):
    """A restore: ``confirm`` must repeat the checkpoint id."""

    confirm: str = ""


def _store() -> Store:
    try:
        root = settings.storage_root()
        return Store.open(root, lock_timeout=settings.lock_timeout(), **store_kwargs(root))
    except CheckpointError as exc:
        raise HTTPException(503, f"the checkpoint store is not usable: {exc.message}") from exc


def _get(store: Store, checkpoint_id: str) -> dict[str, Any]:
    try:
        return model.detail(store, checkpoint_id)
    except CheckpointNotFoundError as exc:
        raise HTTPException(404, exc.message) from exc
    except CheckpointError as exc:
        raise HTTPException(422, exc.message) from exc


def _token(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:]
    cookie = request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if not cookie:  # get_user let the request through, so a token is there; be safe anyway
        raise HTTPException(401, "Not authenticated")
    # a form posted with the session cookie: accept it only from this server's own pages
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    if urlsplit(origin).netloc != request.url.netloc:
        raise HTTPException(403, "cross-site request refused: post from the Checkpoints page, or send a bearer token")
    return cookie


def _refused(resp: httpx.Response, what: str) -> HTTPException:
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    return HTTPException(resp.status_code, f"Airflow refused to {what}: {detail}")


async def _trigger(request: Request, dag_id: str, conf: dict[str, Any], *, unpause: bool = True) -> dict[str, Any]:
    """Start a run of ``dag_id`` through Airflow's REST API, as the caller; unpause the DAG first
    if asked (as the UI's Trigger does), since a paused DAG's run would only wait."""
    base = f"{request.url.scheme}://{request.url.netloc}"
    run_id = f"manual__checkpoints_page__{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}_{time.monotonic_ns() % 10**6}"
    headers = {"Authorization": f"Bearer {_token(request)}"}
    unpaused = False
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as client:
        dag = await client.get(f"/api/v2/dags/{dag_id}")
        if dag.status_code >= 400:
            raise _refused(dag, f"show {dag_id}")
        if dag.json().get("is_paused") and unpause:
            patched = await client.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False})
            if patched.status_code >= 400:
                raise _refused(patched, f"unpause {dag_id}")
            unpaused = True
        resp = await client.post(
            f"/api/v2/dags/{dag_id}/dagRuns", json={"dag_run_id": run_id, "logical_date": None, "conf": conf}
        )
    if resp.status_code >= 400:
        raise _refused(resp, f"start {dag_id}")
    body = resp.json()
    return {
        "dag_id": dag_id,
        "dag_run_id": body.get("dag_run_id", run_id),
        "state": body.get("state"),
        "unpaused": unpaused,
        "paused": bool(dag.json().get("is_paused")) and not unpaused,
    }


def _check_confirm(checkpoint_id: str, confirm: str) -> None:
    if confirm != checkpoint_id:
        raise HTTPException(
            400, f"confirm must repeat the checkpoint id {checkpoint_id!r} exactly; nothing was started"
        )


def _verify_conf(store: Store, checkpoint_id: str, level: str | None) -> dict[str, Any]:
    from airflow_checkpoint_provider.core.states import LEVELS

    if level and level not in LEVELS:
        raise HTTPException(400, f"level {level!r} is not one of {', '.join(LEVELS)}; nothing was started")
    _get(store, checkpoint_id)  # 404 for an unknown id before anything starts
    return {"checkpoint_id": checkpoint_id, "level": level or None}


def create_app() -> FastAPI:
    """The app the plugin mounts."""
    app = FastAPI(title="Checkpoints", version="1", description=__doc__)

    @app.get("/ui/", response_class=HTMLResponse, summary="List view")
    def list_view(_user: User) -> str:
        return html.list_view(_store(), base=PREFIX, rows=PAGE_ROWS)

    @app.get("/ui/rollbacks", response_class=HTMLResponse, summary="Rollback copies in the live stores")
    def rollbacks_view(_user: User) -> str:
        from airflow_checkpoint_provider.ui.live import rollback_copies

        copies, problems = rollback_copies(_store())
        return html.rollbacks_page(copies, problems, base=PREFIX)

    @app.get("/ui/{checkpoint_id}", response_class=HTMLResponse, summary="Detail view")
    def detail_view(checkpoint_id: str, _user: User) -> str:
        return html.detail_page(_get(_store(), checkpoint_id), base=PREFIX)

    @app.post("/ui/{checkpoint_id}/restore", summary="Start restore_checkpoint from the detail page's form")
    async def restore_form(
        checkpoint_id: str,
        request: Request,
        _user: User,
        confirm: Annotated[str, Form()] = "",
        dry_run: Annotated[bool, Form()] = False,
    ) -> RedirectResponse:
        _check_confirm(checkpoint_id, confirm)
        run = await _trigger(
            request, DAGS["restore"], {"checkpoint_id": checkpoint_id, "confirm": confirm, "dry_run": dry_run}
        )
        return RedirectResponse(f"/dags/{run['dag_id']}/runs/{run['dag_run_id']}", status_code=303)

    @app.post("/ui/{checkpoint_id}/verify", summary="Start checkpoint_verify from the detail page's Verify now")
    async def verify_form(
        checkpoint_id: str, request: Request, _user: User, level: Annotated[str, Form()] = ""
    ) -> RedirectResponse:
        run = await _trigger(request, DAGS["verify"], _verify_conf(_store(), checkpoint_id, level))
        return RedirectResponse(f"/dags/{run['dag_id']}/runs/{run['dag_run_id']}", status_code=303)

    @app.get("/api/rollbacks", summary="Rollback copies in the live stores, and the stores that did not answer")
    def get_rollbacks(_user: User) -> dict[str, Any]:
        from airflow_checkpoint_provider.ui.live import rollback_copies

        copies, problems = rollback_copies(_store())
        return {"rollbacks": copies, "problems": problems}

    @app.post("/api/verify/{checkpoint_id}", summary="Verify one checkpoint now (starts checkpoint_verify)")
    async def verify(
        checkpoint_id: str, request: Request, _user: User, body: VerifyRequest | None = None
    ) -> dict[str, Any]:
        body = body or VerifyRequest()
        conf = {**body.conf, **_verify_conf(_store(), checkpoint_id, body.level)}
        return await _trigger(request, DAGS["verify"], conf, unpause=body.unpause)

    @app.get("/api/checkpoints", summary="Checkpoints, newest first")
    def list_checkpoints(
        _user: User, type: Annotated[str | None, Query()] = None, limit: Annotated[int | None, Query(ge=1)] = None
    ) -> dict[str, Any]:
        if type == "workflow":
            rows = model.workflows(_store())
            return {"workflows": rows[:limit] if limit else rows}
        try:
            data = model.listing(_store(), type_=type, limit=limit)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        return {"checkpoints": data.rows, "damaged": data.damaged, "lkg": data.lkg}

    @app.get("/api/checkpoints/{checkpoint_id}", summary="One checkpoint")
    def get_checkpoint(checkpoint_id: str, _user: User) -> dict[str, Any]:
        return _get(_store(), checkpoint_id)

    @app.get("/api/lkg", summary="The last-known-good pointer and its history")
    def get_lkg(_user: User) -> dict[str, Any]:
        store = _store()
        pointer = store.lkg()
        return {"lkg": pointer.to_dict() if pointer else None, "history": [p.to_dict() for p in store.lkg_history()]}

    @app.post("/api/checkpoints/database", summary="Take a checkpoint now (starts checkpoint_scheduled)")
    async def create_checkpoint(request: Request, _user: User, body: RunRequest | None = None) -> dict[str, Any]:
        body = body or RunRequest()
        return await _trigger(request, DAGS["database"], body.conf, unpause=body.unpause)

    @app.post("/api/checkpoints/deployment", summary="Validate a deployment and checkpoint (checkpoint_pre_deploy)")
    async def create_deployment(request: Request, _user: User, body: RunRequest | None = None) -> dict[str, Any]:
        body = body or RunRequest()
        return await _trigger(request, DAGS["deployment"], body.conf, unpause=body.unpause)

    @app.post("/api/restore/{checkpoint_id}", summary="Restore a checkpoint (starts restore_checkpoint)")
    async def restore(checkpoint_id: str, body: RestoreRequest, request: Request, _user: User) -> dict[str, Any]:
        _check_confirm(checkpoint_id, body.confirm)
        if checkpoint_id != "last-known-good":
            _get(_store(), checkpoint_id)  # 404 for an unknown id before anything starts
        conf = {**body.conf, "checkpoint_id": checkpoint_id, "confirm": body.confirm}
        return await _trigger(request, DAGS["restore"], conf, unpause=body.unpause)

    return app
