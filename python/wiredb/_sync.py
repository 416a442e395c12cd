"""Keeps a `pycrdt.Doc` in sync through a link (a native endpoint or a Python channel).

The link does the protocol and the I/O; this class only moves bytes between it and
the document: local changes out (as they happen, or on `push()`), remote changes in (everything
pending merged into one update, applied once). An update received from the endpoint is never
sent back to it.

`AwarenessSync` does the same for a `pycrdt.Awareness` (who is there, their cursors): the local
state out, the peers' states in.
"""

from __future__ import annotations

import logging
from typing import Any

from pycrdt import Awareness, Doc, Encoder, Subscription, TransactionEvent, merge_updates

from ._links import Link
from ._wiredb import Batch, update_fits

log = logging.getLogger("wiredb")

#: An encoded empty state vector: a document with no content.
EMPTY_STATE_VECTOR = b"\x00"
#: The origin given to awareness changes that came from the peer (they are never sent back).
REMOTE = "remote"
#: Awareness updates kept for an awareness not used yet; past it they are dropped and the
#: states are asked for again on first use.
PENDING_AWARENESS_LIMIT = 256
#: Bytes of received updates that may wait for earlier ones the document lacks; past it the
#: oldest are dropped with a warning (a peer that never sends what they wait for is broken).
MAX_WAITING_BYTES = 64 << 20


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
        #: Changes the peer may lack that only a resync carries (made while disconnected,
        #: or left unwritten by a lost connection): cleared once the peer asked for them.
        #: A document with content may hold some before the first sync.
        self.resync_pending = doc.get_state() != EMPTY_STATE_VECTOR
        self._changed_offline = False
        self._local: list[bytes] = []
        self._remote: list[bytes] = []
        #: Received updates that start beyond the document's clocks, oldest first.
        self._waiting: list[bytes] = []
        #: Sync step 1s sent on this link, answers (step 2s) received, and the number of
        #: answers whose content the document holds. A peer answers each step 1 with a step 2,
        #: in order, so the n-th step 2 answers the n-th step 1.
        self._step1_sent = 0
        self._step2_received = 0
        self._step2_applied = 0
        #: The answer that the latest pull waits for (0: no pull asked yet).
        self._pull_target = 0
        self._pull_requested = False
        self._subscription: Subscription | None = doc.observe(self._on_change)
        self.awareness = AwarenessSync(endpoint)

    def start(self) -> None:
        """Opens the sync: sends our state vector (sync step 1)."""
        self._send_step1()

    def _send_step1(self) -> int:
        self.endpoint.send_step1(self.doc.get_state())
        self._step1_sent += 1
        return self._step1_sent

    @property
    def unsent(self) -> bool:
        """Whether local changes may not have reached the peer: not pushed yet, not written
        to the link yet, or waiting for a resync."""
        return (
            bool(self._local)
            or self.resync_pending
            or self._changed_offline
            or self.endpoint.unsent
        )

    def _on_change(self, event: TransactionEvent) -> None:
        if self._applying:
            return
        if self.closed is not None:
            # Nobody to send it to: the next connection's resync carries it.
            self._changed_offline = True
            return
        update = event.update
        if self.auto_push:
            self.endpoint.send_update(update)
        else:
            self._local.append(update)

    def push(self) -> None:
        """Sends the local changes not sent yet, merged into one update."""
        if self._local and self.closed is None:
            updates, self._local = self._local, []
            self.endpoint.send_update(updates[0] if len(updates) == 1 else merge_updates(*updates))

    def pull(self) -> int:
        """Starts a pull: applies everything received so far and asks the peer for what the
        document still lacks (a sync step 1). Its answer is applied as soon as it arrives;
        `pulled(target)` (with the number returned) says when it was. Everything the peer held
        when it read the request is then in the document, whatever was in flight before."""
        self.apply_received()
        # A closed link answers nothing: the client moves the pull to the next one.
        self._pull_target = self._send_step1() if self.closed is None else self._step1_sent + 1
        self._pull_requested = True
        return self._pull_target

    def adopt_pull(self) -> int:
        """Makes this new link's first answer (to `start()`'s step 1, which holds everything
        the peer has) complete the pulls that a lost link left unanswered."""
        self._pull_requested = True
        self._pull_target = max(self._pull_target, 1)
        return self._pull_target

    def pulled(self, target: int) -> bool:
        """Whether the document holds the answer that `pull()` (which returned `target`)
        waits for."""
        return self._step2_applied >= target

    def apply_received(self) -> None:
        """Applies what was received so far (no round trip)."""
        self.process(self.endpoint.receive())
        self._apply_remote()

    def process(self, batch: Batch) -> None:
        """Handles what one `Endpoint.receive()` returned."""
        for state_vector in batch.step1:
            # Everything the peer lacks, local changes not pushed yet included.
            self.endpoint.send_step2(self.doc.get_update(state_vector))
            self._local.clear()
            self.resync_pending = False
        self._remote.extend(batch.updates)
        self.awareness.receive(batch.awareness)
        if batch.query_awareness:
            self.awareness.announce()
        self._step2_received += batch.step2
        if batch.denied is not None:
            self.denied = batch.denied
            log.warning("permission denied: %s", batch.denied)
        for error in batch.errors:
            log.warning("skipped a malformed message: %s", error)
        if self.auto_pull or self._pull_requested:
            self._apply_remote()
        if batch.closed is not None:
            self.closed = batch.closed
            self.awareness.closed()

    def _apply_remote(self) -> None:
        if self._remote:
            updates, self._remote = self._remote, []
            self._applying = True
            try:
                self._integrate(updates)
            finally:
                self._applying = False
        self._step2_applied = self._step2_received
        # Synchronized once the first answer is in: the connection's (with auto_pull), else
        # the first pull's (0.7.1's first pull asked the peer, and waited for its answer).
        first = 1 if self.auto_pull else self._pull_target
        if first and self._step2_applied >= first:
            self.synced = True
        if self._pull_requested and self._step2_applied >= self._pull_target:
            self._pull_requested = False

    def _integrate(self, updates: list[bytes]) -> None:
        """Applies the updates the document can take without a gap in its clocks, then those
        that waited for them; the others wait. yrs 0.28 (pycrdt's too) integrates an update
        that starts beyond the document's clocks at once, and for some such updates follows
        freed pointers later (found by fuzzing wiredb's rooms), so they wait here instead, as
        Yjs keeps them pending."""
        queue = [*self._waiting, *updates]
        state: bytes | None = None
        progress = True
        while queue and progress:
            progress = False
            left = []
            for update in queue:
                if state is None:
                    state = self.doc.get_state()
                try:
                    fits = update_fits(update, state)
                except ValueError as error:
                    log.warning("skipped a remote update: %s", error)
                    continue
                if not fits:
                    left.append(update)
                    continue
                try:
                    self.doc.apply_update(update)
                except Exception as error:
                    log.warning("could not apply a remote update: %s", error)
                state = None
                progress = True
            queue = left
        size = sum(len(update) for update in queue)
        while size > MAX_WAITING_BYTES:
            dropped = queue.pop(0)
            size -= len(dropped)
            log.warning("dropped a remote update that waited for content that never came")
        self._waiting = queue

    def stop(self) -> None:
        if self._subscription is not None:
            self.doc.unobserve(self._subscription)
            self._subscription = None


class AwarenessSync:
    """Keeps a `pycrdt.Awareness` in sync through an endpoint.

    Until `activate()` nothing is sent and the received updates are only kept (up to a limit),
    so a client that never looks at the awareness costs nothing per cursor move. Once active:
    the local state is announced, each local change is sent, the peers' updates are applied,
    and a peer that asks (query-awareness) is sent the local state again.
    """

    def __init__(self, endpoint: Link) -> None:
        self.endpoint = endpoint
        self.awareness: Awareness | None = None
        self._pending: list[bytes] = []
        self._missed = False
        self._open = True
        self._subscription: str | None = None

    def activate(self, awareness: Awareness) -> None:
        """Starts syncing `awareness`: what arrived so far is applied, the local state sent."""
        if self.awareness is not None or not self._open:
            return
        self.awareness = awareness
        self._subscription = awareness.observe(self._on_change)
        pending, self._pending = self._pending, []
        self.receive(pending)
        if self._missed:
            self.endpoint.send_query_awareness()
        state = awareness.get_local_state()
        if state is not None:
            # A new clock, so that peers who saw this client leave an earlier connection take
            # it as back (an equal clock would be ignored); observers see no change.
            awareness.set_local_state(state)

    def announce(self) -> None:
        """Sends the local state again (asked for by the peer)."""
        awareness = self.awareness
        if awareness is not None and self._open and awareness.get_local_state() is not None:
            self.endpoint.send_awareness(awareness.encode_awareness_update([awareness.client_id]))

    def receive(self, payloads: list[bytes]) -> None:
        """Applies awareness updates from the peer (keeps them while not active)."""
        if not payloads:
            return
        awareness = self.awareness
        if awareness is None:
            self._pending.extend(payloads)
            if len(self._pending) > PENDING_AWARENESS_LIMIT:
                self._pending.clear()
                self._missed = True
            return
        for payload in payloads:
            try:
                awareness.apply_awareness_update(payload, REMOTE)
            except Exception as error:
                log.warning("skipped a malformed awareness update: %s", error)

    def _on_change(self, topic: str, event: tuple[dict[str, Any], Any]) -> None:
        awareness = self.awareness
        if topic != "update" or awareness is None or not self._open:
            return
        changes, origin = event
        own = awareness.client_id
        if own not in (*changes["added"], *changes["updated"], *changes["removed"]):
            return
        if origin == REMOTE and awareness.get_local_state() is None:
            return
        # A peer that tried to remove our live state made pycrdt bump our clock: sending the
        # state at that clock tells everyone this client is still here.
        self.endpoint.send_awareness(awareness.encode_awareness_update([own]))

    def close(self) -> None:
        """Our side closes: peers are told this client left (its state at the same clock,
        null, as y-websocket does), then the peers' states are dropped."""
        awareness = self.awareness
        if awareness is not None and self._open and awareness.get_local_state() is not None:
            own = awareness.client_id
            self.endpoint.send_awareness(encode_removal(own, awareness.meta[own]["clock"]))
        self.closed()

    def closed(self) -> None:
        """The connection ended: the peers' states are gone with it (observers see them go)."""
        if not self._open:
            return
        self._open = False
        self._pending.clear()
        awareness = self.awareness
        if awareness is None:
            return
        if self._subscription is not None:
            awareness.unobserve(self._subscription)
            self._subscription = None
        others = [client for client in awareness.states if client != awareness.client_id]
        awareness.remove_awareness_states(others, "closed")
        # Their clocks are forgotten too: after a reconnection the server sends their states
        # again at the same clocks, which would otherwise be taken as old news.
        for client in awareness.meta.keys() - {awareness.client_id}:
            del awareness.meta[client]


def encode_removal(client_id: int, clock: int) -> bytes:
    """An awareness update saying that `client_id` has no state any more."""
    encoder = Encoder()
    encoder.write_var_uint(1)
    encoder.write_var_uint(client_id)
    encoder.write_var_uint(clock)
    encoder.write_var_string("null")
    return encoder.to_bytes()
