"""Keeps a `pycrdt.Doc` in sync through a link (a native endpoint or a Python channel).

The link does the protocol and the I/O; this class only moves bytes between it and
the document: local changes out (as they happen, or on `push()`), remote changes in (everything
pending merged into one update, applied once). An update received from the endpoint is never
sent back to it.
"""

from __future__ import annotations

import logging
from typing import Any

from pycrdt import Doc, Subscription, TransactionEvent, merge_updates

from ._links import Link
from ._wiredb import Batch

log = logging.getLogger("wiredb")


class DocSync:
    def __init__(self, endpoint: Link, doc: Doc[Any], auto_push: bool, auto_pull: bool) -> None:
        self.endpoint = endpoint
        self.doc = doc
        self.auto_push = auto_push
        self.auto_pull = auto_pull
        self.synced = False
        self.closed: tuple[int, str] | None = None
        self.denied: str | None = None
        self._applying = False
        self._local: list[bytes] = []
        self._remote: list[bytes] = []
        self._remote_synced = False
        self._pull_requested = False
        self._subscription: Subscription | None = doc.observe(self._on_change)

    def start(self) -> None:
        """Opens the sync: sends our state vector (sync step 1)."""
        self.endpoint.send_step1(self.doc.get_state())

    def _on_change(self, event: TransactionEvent) -> None:
        if self._applying:
            return
        update = event.update
        if self.auto_push and self.closed is None:
            self.endpoint.send_update(update)
        else:
            self._local.append(update)

    def push(self) -> None:
        """Sends the local changes not sent yet, merged into one update."""
        if self._local and self.closed is None:
            updates, self._local = self._local, []
            self.endpoint.send_update(updates[0] if len(updates) == 1 else merge_updates(*updates))

    def pull(self) -> None:
        """Applies everything received so far; if not synchronized yet, the sync completes as
        soon as the peer's answer arrives."""
        self._pull_requested = True
        self.process(self.endpoint.receive())
        self._apply_remote()

    def process(self, batch: Batch) -> None:
        """Handles what one `Endpoint.receive()` returned."""
        for state_vector in batch.step1:
            self.endpoint.send_step2(self.doc.get_update(state_vector))
        self._remote.extend(batch.updates)
        if batch.synced:
            self._remote_synced = True
        if batch.denied is not None:
            self.denied = batch.denied
            log.warning("permission denied: %s", batch.denied)
        for error in batch.errors:
            log.warning("skipped a malformed message: %s", error)
        if self.auto_pull or self._pull_requested:
            self._apply_remote()
        if batch.closed is not None:
            self.closed = batch.closed

    def _apply_remote(self) -> None:
        if self._remote:
            updates, self._remote = self._remote, []
            self._applying = True
            try:
                for update in updates:
                    try:
                        self.doc.apply_update(update)
                    except Exception as error:
                        log.warning("could not apply a remote update: %s", error)
            finally:
                self._applying = False
        if self._remote_synced:
            self.synced = True
        if self.synced:
            # A pull asked before the sync waits for it; after, each pull takes what is there.
            self._pull_requested = False

    def stop(self) -> None:
        if self._subscription is not None:
            self.doc.unobserve(self._subscription)
            self._subscription = None
