"""Request metrics: one count and one duration per HTTP request, labelled by view, not by URL.

The view name (``resolver_match.view_name``) keeps the label set small and free of ids; a request
no URL pattern matched is counted as ``<unmatched>``.
"""
from __future__ import annotations

import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from arena.metrics import record_request

UNMATCHED_VIEW = "<unmatched>"


class RequestMetricsMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        started = time.perf_counter()
        response = self.get_response(request)
        self._record(request, response, started)
        return response

    async def _acall(self, request):
        started = time.perf_counter()
        response = await self.get_response(request)
        self._record(request, response, started)
        return response

    @staticmethod
    def _record(request, response, started: float) -> None:
        match = getattr(request, "resolver_match", None)
        view = (match.view_name or match.route or UNMATCHED_VIEW) if match else UNMATCHED_VIEW
        record_request(method=request.method or "", view=view, status=response.status_code,
                       seconds=time.perf_counter() - started)
