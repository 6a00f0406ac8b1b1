"""Leases: one holder at a time for work on a model, on any BlobStore.

A lease is an object ``models/<model>/leases/<name>.json`` (its own object, so IAM can
grant a stage its own leases only), taken create-only or by compare-and-set over one
that was released or expired, renewed by a heartbeat while the work goes on, and
released by compare-and-set. Two leases are in use:

- ``staging``: a rollout of the model's staging service (the deploy stage, a rollback,
  the reconciliation), so rollouts happen one after another;
- ``register-<run_id>`` (``registration``): a delivery registering the run, sized to
  the work rather than to the worst-case redelivery chain; whoever holds it owns the
  run's claim of a version number (``Registry.register``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import orjson

from modelrail.kernel.canonical import canonical_json
from modelrail.kernel.errors import LeaseHeld, LeaseLost, NotFound, PreconditionFailed
from modelrail.kernel.ports import BlobStore

log = logging.getLogger(__name__)

# A run's registration lease: renewed every REGISTER_HEARTBEAT_S while the delivery
# works, so it expires REGISTER_LEASE_S after the holder stopped (died, paused). A
# registration writes a few files and signs once: seconds; a Vertex AI upload may take
# minutes, through which the heartbeat keeps the lease.
REGISTER_LEASE_S = 60.0
REGISTER_HEARTBEAT_S = 15.0
# How long a second delivery of the run waits for the first before it is redelivered.
REGISTER_LEASE_WAIT_S = 120.0


@dataclasses.dataclass(frozen=True)
class LeaseState:
    """Who last held a lease and until when (``Leases.state``)."""

    holder: str
    live: bool
    # When it was released or expires (``time.time()``): the last sign of its holder.
    until: float


class Leases:
    """The leases of every model in one bucket."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    @contextlib.contextmanager
    def hold(
        self,
        model: str,
        name: str,
        holder: str,
        *,
        ttl_s: float,
        wait_s: float,
        heartbeat_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> Iterator[Lease]:
        """Hold ``models/<model>/leases/<name>`` for ``holder`` while the block runs: one
        holder at a time, so rollouts of one service happen one after another.

        Taken create-only, or by compare-and-set over a lease that was released or is
        past its expiry (``ttl_s`` after it was taken or last renewed: its holder died
        or outlived its delivery), so of two takers one wins. With ``heartbeat_s`` a
        thread renews it that often (by compare-and-set; it stops if the lease was
        taken over), so ``ttl_s`` can be sized to notice a dead holder, not to the
        longest work. Another holder's live lease is waited for up to ``wait_s``; then
        ``LeaseHeld``, so the bus redelivers later. Released by compare-and-set, so a
        holder that outlived its lease never frees its successor's. The block gets a
        ``Lease``, whose ``check`` says whether it still holds it (a holder paused past
        its expiry has lost it, and must not commit what the lease guards).
        """
        key = _key(model, name)
        deadline = clock() + wait_s
        pause = 0.1
        # Names this taking of the lease in every renewal: whose it is, read from the
        # object itself, whatever generation a renewal in flight has made.
        token = uuid.uuid4().hex
        while True:
            now = clock()
            body = canonical_json(
                {"holder": holder, "token": token, "taken_at": now, "expires_at": now + ttl_s}
            )
            try:
                current = self.store.read(key)
            except NotFound:
                generation = 0
            else:
                held = orjson.loads(current.data)
                free = held.get("released", False) or float(held["expires_at"]) <= now
                generation = current.generation if free else -1
            if generation >= 0:
                try:
                    taken = self.store.write(
                        key, body, if_generation_match=generation, content_type="application/json"
                    )
                    break
                except PreconditionFailed:
                    continue  # another taker won: read who holds it now
            if now >= deadline:
                raise LeaseHeld(
                    f"{model}'s {name} is held by {held['holder']} ({key}); retry later",
                    str(held["holder"]),
                )
            sleep(min(pause, max(deadline - now, 0.0)))
            pause = min(pause * 2, 2.0)
        heartbeat = _Heartbeat(self.store, key, holder, token, taken, ttl_s, heartbeat_s, clock)
        try:
            yield Lease(self.store, key, token)
        finally:
            heartbeat.stop()
            released = canonical_json({"holder": holder, "released": True, "released_at": clock()})
            # Never over the block's own outcome: a lease not released lapses by itself.
            try:
                current = self.store.read(key)
                if orjson.loads(current.data).get("token") == token:
                    self.store.write(
                        key,
                        released,
                        if_generation_match=current.generation,
                        content_type="application/json",
                    )
            except Exception:
                log.warning("could not release %s; it lapses by itself", key, exc_info=True)

    def state(
        self, model: str, name: str, *, clock: Callable[[], float] = time.time
    ) -> LeaseState | None:
        """Who holds (or last held) the lease ``name``; None if it was never taken."""
        try:
            held = orjson.loads(self.store.read(_key(model, name)).data)
        except NotFound:
            return None
        if held.get("released", False):
            return LeaseState(str(held["holder"]), False, float(held.get("released_at", 0.0)))
        until = float(held["expires_at"])
        return LeaseState(str(held["holder"]), until > clock(), until)

    def registration(
        self,
        model: str,
        run_id: str,
        holder: str,
        *,
        wait_s: float = REGISTER_LEASE_WAIT_S,
        clock: Callable[[], float] = time.time,
    ) -> contextlib.AbstractContextManager[Lease]:
        """The lease a delivery holds while it registers ``run_id`` (``register``),
        renewed by a heartbeat; the sweep takes it too before ending the run."""
        return self.hold(
            model,
            registration_name(run_id),
            holder,
            ttl_s=REGISTER_LEASE_S,
            wait_s=wait_s,
            heartbeat_s=REGISTER_HEARTBEAT_S,
            clock=clock,
        )


class Lease:
    """A lease held (``Leases.hold``)."""

    def __init__(self, store: BlobStore, key: str, token: str) -> None:
        self._store, self._key, self._token = store, key, token

    def check(self) -> None:
        """Raise ``LeaseLost`` unless the lease is still this holder's: nobody took it
        over since it was taken (its renewals keep its token)."""
        try:
            token = orjson.loads(self._store.read(self._key).data).get("token")
        except NotFound:
            token = None
        if token != self._token:
            raise LeaseLost(f"{self._key} was taken over: its holder outlived its lease")


class _Heartbeat:
    """Renews a held lease every ``every_s`` (None: never) by compare-and-set until
    stopped; stops by itself once someone else took the lease over."""

    def __init__(
        self,
        store: BlobStore,
        key: str,
        holder: str,
        token: str,
        generation: int,
        ttl_s: float,
        every_s: float | None,
        clock: Callable[[], float],
    ) -> None:
        self.store, self.key, self.holder, self.token = store, key, holder, token
        self.generation, self.ttl_s, self.clock = generation, ttl_s, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if every_s is not None:
            self._thread = threading.Thread(
                target=self._beat, args=(every_s,), name=f"lease {key}", daemon=True
            )
            self._thread.start()

    def _beat(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            now = self.clock()
            body = canonical_json(
                {
                    "holder": self.holder,
                    "token": self.token,
                    "taken_at": now,
                    "expires_at": now + self.ttl_s,
                }
            )
            try:
                self.generation = self.store.write(
                    self.key,
                    body,
                    if_generation_match=self.generation,
                    content_type="application/json",
                )
            except Exception:
                # A lost precondition or an answer lost after the write: whose is it
                # now? Still ours (a renewal that committed unseen): go on from it.
                try:
                    current = self.store.read(self.key)
                except Exception:
                    continue  # a store hiccup: the next beat tries again
                if orjson.loads(current.data).get("token") != self.token:
                    return  # taken over: this holder is past its lease
                self.generation = current.generation

    def stop(self) -> None:
        """Stop renewing (the holder releases right after, with ``generation``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def registration_name(run_id: str) -> str:
    """The lease (``leases/<name>.json``) a registration of ``run_id`` holds."""
    return f"register-{run_id}"


def _key(model: str, name: str) -> str:
    return f"models/{model}/leases/{name}.json"
