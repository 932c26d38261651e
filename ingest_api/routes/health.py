from fastapi import APIRouter

from ingest_api.deps import ConnectionDep
from ingest_api.schemas import Status

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Status, summary="The process is up")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", response_model=Status, summary="The database is reachable (503 otherwise)")
async def readyz(conn: ConnectionDep) -> dict:
    await conn.execute("select 1")
    return {"status": "ready"}
