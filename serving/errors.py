"""The one error type of the serving side, carrying a TF Serving status code."""

from __future__ import annotations

import re

import grpc

# gRPC status -> HTTP status, as TF Serving's REST front end maps them.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
}


class ServingError(Exception):
    """A request the server refuses, with the status code TF Serving would use.

    Args:
      code: a `grpc.StatusCode` (NOT_FOUND, FAILED_PRECONDITION, INVALID_ARGUMENT, ...).
      message: what is wrong, naming the field and value.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving's REST API answers with for this code (500 if unmapped)."""
        return HTTP_STATUS.get(self.code, 500)


_PATHS = re.compile(r"(?:/[\w.+-]+){2,}/?")


def without_paths(text: str) -> str:
    """`text` with file-system paths replaced by <path>: clients learn what was wrong with
    their request, not where the server keeps its files."""
    return _PATHS.sub("<path>", text)
