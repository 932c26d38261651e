from fastapi import APIRouter

from ingest_api.deps import ConnectionDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable (503 otherwise)")
async def readyz(conn: ConnectionDep) -> dict:
    await conn.execute("select 1")
    return {"status": "ready"}
