"""Payloads as content-addressed blobs: encoding values and message histories into rows
(`BlobCodec`), and reading them back with manifests resolved (`BlobReader`).

A message history is stored as one blob per message plus a chain of manifests, so a history
resent at every step costs the store only its new messages.
"""

from __future__ import annotations

import json
import operator
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, event, select
from sqlalchemy.sql.dml import Insert

from counterfact.capture import canonical_json, sha256_hex, to_jsonable
from counterfact.store._engine import StoreError
from counterfact.store._redact import Redactor
from counterfact.store._statements import execute
from counterfact.store.schema import Blob

MESSAGES_MEDIA_TYPE = "application/vnd.counterfact.messages+json"
JSON_MEDIA_TYPE = "application/json"
MANIFEST_CHUNK = 16
_NEW_BLOBS = "cf_new_blobs"  # connection info: blobs inserted by the open transaction

BlobRow = tuple[str, bytes, str]  # digest, data, media type


def manifest_children(data: bytes) -> list[str]:
    """The digests a message manifest points at: its messages and its prefix manifest."""
    value = json.loads(data)
    return [*value["messages"], *([value["prefix"]] if value["prefix"] else [])]


def _str_keys(value: Any) -> bool:
    """Whether every dict in `value` has only string keys (JSON would rename other keys)."""
    if isinstance(value, dict):
        return all(type(k) is str and _str_keys(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(_str_keys, value))
    return True


def _is_message_object(value: Any) -> bool:
    return hasattr(value, "content") and hasattr(value, "type") and hasattr(value, "id")


class BlobCodec:
    """Encodes payloads (redacted) into blob rows and inserts those not stored yet.

    Remembers which blobs are committed, so that the recording hot path sends no insert for a
    message stored at an earlier step, and the encoding of recent messages and chunks."""

    def __init__(self, engine: Engine, insert: Insert, redact: Redactor) -> None:
        self.redact = redact
        self._insert = insert
        self._known: set[str] = set()
        self._messages: OrderedDict[Any, tuple[Any, BlobRow]] = OrderedDict()
        self._chunks: OrderedDict[Any, tuple[list[Any], list[BlobRow]]] = OrderedDict()
        self._lock = threading.Lock()
        event.listen(engine, "commit", self._committed)
        event.listen(engine, "rollback", lambda conn: conn.info.pop(_NEW_BLOBS, None))

    def put(self, conn: Connection, blobs: Sequence[BlobRow]) -> None:
        """Store (digest, data, media type) rows that are not stored yet."""
        with self._lock:
            fresh = {d: (d, b, m) for d, b, m in blobs if d not in self._known}
        if not fresh:
            return
        execute(
            conn,
            self._insert,
            [
                {"digest": d, "media_type": m, "size": len(b), "data": b, "redacted": False, "redaction_note": None}
                for d, b, m in fresh.values()
            ],
        )
        conn.info.setdefault(_NEW_BLOBS, set()).update(fresh)

    def _committed(self, conn: Connection) -> None:
        """Once a transaction commits, its blobs need no insert attempt again."""
        new = conn.info.pop(_NEW_BLOBS, set())
        with self._lock:
            if len(self._known) > 200_000:
                self._known.clear()
            self._known.update(new)

    def encode_value(self, value: Any) -> BlobRow:
        data = canonical_json(self.redact(to_jsonable(value)))
        return sha256_hex(data), data, JSON_MEDIA_TYPE

    def _encode_message(self, message: Any) -> BlobRow:
        """`encode_value` for one message, remembered: histories repeat at every step.

        A LangChain message object is remembered by identity (checked through a weak
        reference, so a recycled id() never matches); a plain role/content dict by its values.
        """
        if _is_message_object(message):
            key: Any = ("obj", id(message))
        elif isinstance(message, dict) and all(isinstance(v, (str, type(None))) for v in message.values()):
            key = ("dict", tuple(sorted(message.items())))
        elif isinstance(message, dict) and _str_keys(message):
            # a recorded request's message with tool calls: known by its JSON (to_jsonable would
            # render it the same, its keys being strings), which is cheaper than encoding it
            try:
                key = ("json", canonical_json(message))
            except (TypeError, ValueError):
                return self.encode_value(message)
        else:
            return self.encode_value(message)
        with self._lock:
            hit = self._messages.get(key)
            if hit is not None and (hit[0] is None or hit[0]() is message):
                self._messages.move_to_end(key)
                return hit[1]
        row = self.encode_value(message)
        ref = weakref.ref(message) if key[0] == "obj" else None
        with self._lock:
            self._messages[key] = (ref, row)
            if len(self._messages) > 20_000:
                self._messages.popitem(last=False)
        return row

    def encode_messages(self, messages: Sequence[Any]) -> list[BlobRow]:
        """Each message as its own blob, plus manifests listing them; the head manifest last.

        Manifests form a chain of fixed chunks ({"prefix": previous manifest, "messages": up to
        MANIFEST_CHUNK digests}), so a history resent at every step shares all its full chunks
        with the previous step: the store grows linearly with the run, not quadratically.
        A chunk whose manifest is already stored is left out of the rows (its messages were
        stored with it), so the cost of a step does not grow with the history either.
        """
        rows: list[BlobRow] = []
        prefix: str | None = None
        for start in range(0, max(len(messages), 1), MANIFEST_CHUNK):
            chunk_rows = self._encode_chunk(prefix, list(messages[start : start + MANIFEST_CHUNK]))
            prefix = chunk_rows[-1][0]
            with self._lock:
                stored = prefix in self._known
            if not stored:
                rows.extend(chunk_rows)
        if not rows:  # the head manifest is the caller's digest of the history
            rows.append(chunk_rows[-1])
        return rows

    def _encode_chunk(self, prefix: str | None, chunk: list[Any]) -> list[BlobRow]:
        """One chunk's message rows and its manifest (last). A full chunk of message objects
        is remembered by the identity of its messages (checked through weak references: one
        that died may have left its id to another object), as the same objects come back in
        the history of every later step."""
        key = (prefix, *map(id, chunk)) if len(chunk) == MANIFEST_CHUNK else None
        if key is not None:
            with self._lock:
                hit = self._chunks.get(key)
                if hit is not None:
                    self._chunks.move_to_end(key)
            if hit is not None and all(map(operator.is_, map(weakref.ref.__call__, hit[0]), chunk)):
                return hit[1]  # (checked without a Python frame per message: histories are long)
        rows = [self._encode_message(m) for m in chunk]
        body = canonical_json({"prefix": prefix, "messages": [d for d, _, _ in rows]})
        rows.append((sha256_hex(body), body, MESSAGES_MEDIA_TYPE))
        if key is not None and all(_is_message_object(m) for m in chunk):
            refs = [weakref.ref(m) for m in chunk]
            with self._lock:
                self._chunks[key] = (refs, rows)
                if len(self._chunks) > 2_000:
                    self._chunks.popitem(last=False)
        return rows


class BlobReader:
    """Reads payloads on one connection; `prefetch` reads many blobs (and the manifests and
    messages they point to) in a few batched queries, so that a long run's steps, whose
    histories share most of their messages, load without a round trip per message."""

    _BATCH = 500

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.rows: dict[str, Any] = {}

    def fetch(self, digests: Sequence[str]) -> None:
        """Read these blobs' rows (those not read yet) in batched queries; a digest with no
        blob is left out of `rows`."""
        pending = [d for d in dict.fromkeys(digests) if d not in self.rows]
        for start in range(0, len(pending), self._BATCH):
            chunk = pending[start : start + self._BATCH]
            for row in self.conn.execute(
                select(Blob.digest, Blob.data, Blob.media_type, Blob.redacted).where(Blob.digest.in_(chunk))
            ):
                self.rows[row.digest] = row

    def prefetch(self, digests: Sequence[str | None]) -> None:
        """Read these payloads' blobs and, level by level, the manifests and messages they
        point to."""
        pending = [d for d in dict.fromkeys(digests) if d and d not in self.rows]
        while pending:
            self.fetch(pending)
            following: list[str] = []
            for digest in pending:
                row = self.rows.get(digest)
                if row is not None and row.media_type == MESSAGES_MEDIA_TYPE and row.data is not None and not row.redacted:
                    following.extend(manifest_children(row.data))
            pending = [d for d in dict.fromkeys(following) if d not in self.rows]

    def _row(self, digest: str) -> Any:
        if digest not in self.rows:
            self.rows[digest] = self.conn.execute(
                select(Blob.digest, Blob.data, Blob.media_type, Blob.redacted).where(Blob.digest == digest)
            ).one_or_none()
        return self.rows[digest]

    def load(self, digest: str) -> Any:
        row = self._row(digest)
        if row is None:
            raise StoreError(f"blob {digest[:12]} is missing from the store")
        if row.redacted or row.data is None:
            return {"redacted": digest}
        value = json.loads(row.data)
        if row.media_type == MESSAGES_MEDIA_TYPE:
            chunks = [value["messages"]]
            while value["prefix"] is not None:
                manifest = self._row(value["prefix"])
                if manifest is None or manifest.data is None or manifest.redacted:
                    raise StoreError(f"message manifest {value['prefix'][:12]} is missing or redacted")
                value = json.loads(manifest.data)
                chunks.append(value["messages"])
            return [self.load(d) for chunk in reversed(chunks) for d in chunk]
        return value
