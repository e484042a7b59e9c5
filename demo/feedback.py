"""Turn failures into messages in the browser: a toast that says what went wrong, never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import gradio as gr

from edgeasr.errors import EdgeASRError

log = logging.getLogger(__name__)


@contextmanager
def user_errors(action: str) -> Iterator[None]:
    """Re-raise any failure inside as `gr.Error` so Gradio shows its message instead of a dead output.

    Expected errors (unsupported recipe, missing data) carry a message written for the user; anything
    else is logged with its traceback on the server and summarized in the UI.
    """
    try:
        yield
    except gr.Error:
        raise
    except EdgeASRError as exc:
        raise gr.Error(f"{action}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the UI must survive any failure of a handler
        log.exception("%s failed", action)
        raise gr.Error(f"{action} failed ({type(exc).__name__}: {exc}). The server log has the details.") from exc
