"""Errors as RFC 9457 ``application/problem+json``: one exception, one response shape."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

PROBLEM_TYPE = "https://croupier.dev/problems/"  # + a slug; documented in docs/gateway.md
MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """A request the gateway refuses: its HTTP status, a slug (``type``) and a detail."""

    def __init__(
        self, status: int, slug: str, title: str, detail: str | None = None,
        headers: dict[str, str] | None = None, **extra: Any,
    ) -> None:  # fmt: skip
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(p: Problem, instance: str | None = None) -> Response:
    body: dict[str, Any] = {"type": PROBLEM_TYPE + p.slug, "title": p.title, "status": p.status}
    if p.detail:
        body["detail"] = p.detail
    if instance:
        body["instance"] = instance
    body.update(p.extra)
    return Response(orjson.dumps(body), status_code=p.status, media_type=MEDIA_TYPE,
                    headers=p.headers)  # fmt: skip
