"""How a streamed answer's chunks make one record: which chunk's fingerprint, model and id count.

Providers put `system_fingerprint` on different chunks of a stream:

- every chunk (OpenAI, and most servers);
- every chunk but the first, a prompt-filter chunk with an empty `id`, an empty `model`, no
  choices and a `null` fingerprint (Azure OpenAI);
- only the terminal chunks, the one with `finish_reason` or the trailing usage chunk, the others
  `null` (vLLM);
- only the first chunk, `null` afterwards (SGLang's gateway).

One rule serves them all: the stream's value is the first real value any chunk carries, so a
chunk that carries none (null, empty, missing, or a chunk without choices) never hides or
overwrites it. Only when no chunk carries a value does the state come from the chunks: `null`
if any chunk had `null`, else `""` if any had an empty string, else absent (no chunk had the
key). Two different values in one stream are a disagreement: the first is kept and the others
are noted on the record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fp_monitor.domain.models import ABSENT, NULL, Usage

DISAGREEMENT_TAG = "fpmon.chunks_disagree"
"""Tag of a streamed record whose chunks carried more than one fingerprint: the values after
the first (comma-separated), the recorded fingerprint being the first."""
MAX_DISAGREEING = 3
"""Distinct later values kept for the tag: enough to see what happened, bounded whatever the
stream."""
# Where a token stands when no chunk carried a real value: the strongest state seen wins.
_STATE_RANK = {ABSENT: 0, "": 1, NULL: 2}


def _is_value(token: str) -> bool:
    return token not in _STATE_RANK


def _stronger(seen: str | None, token: str) -> str:
    """Of two tokens of which neither is a value, the one a record keeps."""
    if seen is None or _STATE_RANK[token] > _STATE_RANK[seen]:
        return token
    return seen


class StreamFields:
    """The record-worthy fields of one stream, gathered chunk by chunk (see the module
    docstring). `take` each chunk's fields, as `completion_fields` gives them, in order."""

    def __init__(self) -> None:
        self.chunks = 0
        self._fingerprint: str | None = None
        """The first real value; None until a chunk carries one."""
        self._fingerprint_state: str | None = None
        self._model: str | None = None
        self._model_state: str | None = None
        self._response_id: str | None = None
        self._usage = Usage()
        self._disagreeing: dict[str, None] = {}

    def take(self, fields: dict[str, Any]) -> None:
        self.chunks += 1
        fingerprint: str = fields["fingerprint"]
        if not _is_value(fingerprint):
            self._fingerprint_state = _stronger(self._fingerprint_state, fingerprint)
        elif self._fingerprint is None:
            self._fingerprint = fingerprint
        elif fingerprint != self._fingerprint and len(self._disagreeing) < MAX_DISAGREEING:
            self._disagreeing[fingerprint] = None
        model: str = fields["resolved_model"]
        if not _is_value(model):
            self._model_state = _stronger(self._model_state, model)
        elif self._model is None:
            self._model = model
        if self._response_id is None and fields["response_id"]:
            self._response_id = fields["response_id"]
        if fields["usage"] != Usage():
            self._usage = fields["usage"]  # the last one: a trailing usage chunk has the totals

    @property
    def has_fingerprint(self) -> bool:
        """A chunk carried a real fingerprint value."""
        return self._fingerprint is not None

    @property
    def complete(self) -> bool:
        """A real fingerprint and a real model have both been seen: later chunks can change
        neither (a later, different fingerprint is only noted)."""
        return self._fingerprint is not None and self._model is not None

    @property
    def needs_model_or_id(self) -> bool:
        """A later chunk may still bring the model or the response id."""
        return self._model is None or self._response_id is None

    def is_known(self, fingerprint: str) -> bool:
        """A later chunk with this fingerprint token would change nothing."""
        if self._fingerprint is None:
            state = self._fingerprint_state
            return (
                not _is_value(fingerprint)
                and state is not None
                and (_STATE_RANK[state] >= _STATE_RANK[fingerprint])
            )
        return (
            not _is_value(fingerprint)
            or fingerprint == self._fingerprint
            or fingerprint in self._disagreeing
            or len(self._disagreeing) >= MAX_DISAGREEING
        )

    @property
    def disagreeing(self) -> tuple[str, ...]:
        """Real values that chunks carried after the first one, in order of appearance."""
        return tuple(self._disagreeing)

    def fields(self) -> dict[str, Any]:
        """The Observation fields of the stream so far (at least one chunk taken)."""
        return {
            "fingerprint": _token(self._fingerprint, self._fingerprint_state),
            "resolved_model": _token(self._model, self._model_state),
            "response_id": self._response_id,
            "usage": self._usage,
        }


def _token(value: str | None, state: str | None) -> str:
    if value is not None:
        return value
    return ABSENT if state is None else state


def disagreeing(tags: Mapping[str, str]) -> tuple[str, ...]:
    """The later fingerprints a record's DISAGREEMENT_TAG names (none when the tag is missing or
    not what fpmon writes: a record imported from elsewhere is data too)."""
    try:
        values = json.loads(tags.get(DISAGREEMENT_TAG, "[]"))
    except (ValueError, RecursionError):
        return ()
    if not isinstance(values, list):
        return ()
    return tuple(v for v in values if isinstance(v, str))
