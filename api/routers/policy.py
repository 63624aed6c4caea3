from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import ANY_ROLE, RuntimeDep, require
from copilot.ask import ask
from copilot.schema import AskAnswer, Clause, SearchHit

router = APIRouter(prefix="/v1/policy", tags=["policy"], dependencies=[require(*ANY_ROLE)])


class ClauseList(BaseModel):
    corpus_version: str
    clauses: list[Clause]


class ClauseOne(BaseModel):
    corpus_version: str
    clause: Clause


class SearchResult(BaseModel):
    corpus_version: str
    query: str
    hits: list[SearchHit]


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=2000)
    k: int = Field(3, ge=1, le=10)


@router.get("/clauses", response_model=ClauseList, summary="All active clauses of the current corpus version")
def list_clauses(rt: RuntimeDep, area: str | None = None, label: str | None = None) -> ClauseList:
    corpus = rt.corpus
    if area is not None:
        corpus.taxonomy.check_area(area)
    if label is not None:  # "" is a typo too, not "no filter"
        corpus.taxonomy.check(label)
    clauses = [c for c in corpus.active if (area is None or c.area == area) and (label is None or label in c.labels)]
    return ClauseList(corpus_version=corpus.version, clauses=clauses)


@router.get("/clauses/{clause_id}", response_model=ClauseOne, summary="One clause by its stable ID")
def get_clause(clause_id: str, rt: RuntimeDep) -> ClauseOne:
    from copilot.errors import NotFound, UnknownClause

    try:
        clause = rt.corpus.get(clause_id)
    except UnknownClause as exc:
        raise NotFound(exc.detail) from None
    return ClauseOne(corpus_version=rt.corpus.version, clause=clause)


@router.get("/search", response_model=SearchResult, summary="Hybrid (BM25 + dense) clause search in plain language")
async def search(rt: RuntimeDep, q: Annotated[str, Query(min_length=1, max_length=2000)], k: Annotated[int, Query(ge=1, le=50)] = 5) -> SearchResult:
    if not q.strip():
        from copilot.errors import EmptyText

        raise EmptyText("the query is empty")
    hits = await asyncio.to_thread(rt.index.search, q, k)
    return SearchResult(corpus_version=rt.corpus.version, query=q, hits=hits)


@router.post("/ask", response_model=AskAnswer, summary="Plain-language question answered from the clauses, with citations")
async def ask_policy(body: AskRequest, rt: RuntimeDep) -> AskAnswer:
    return await asyncio.to_thread(ask, rt, body.question, body.k)
