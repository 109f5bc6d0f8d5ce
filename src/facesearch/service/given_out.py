"""JSON that a front end gives out (the API, `search --json`): never a server path."""

from __future__ import annotations

from typing import Any

from facesearch.service.cases import readable_place


def without_server_paths(data: Any) -> Any:
    """data (asdict of a search, stored search or report) with every "location" that is not an
    http(s) URL in readable_place's words: where the server keeps a gallery's files is no
    client's business. Field names stay, for clients that read them."""
    if isinstance(data, dict):
        return {key: readable_place(value) if key == "location" and isinstance(value, str)
                else without_server_paths(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [without_server_paths(value) for value in data]
    return data
