"""Uploaded files, as the dataset and OpenAI file endpoints both receive them."""

from __future__ import annotations

from pathlib import PurePath

from fastapi import UploadFile

from modelforge_gateway.errors import invalid


def upload_filename(upload: UploadFile) -> str:
    """The client's file name without any directory part (browsers may send one)."""
    raw = (upload.filename or "").replace("\\", "/")
    name = PurePath(raw).name.strip()
    if not name or name in (".", ".."):
        raise invalid(["body", "file"], "the uploaded file needs a file name")
    return name
