"""Claims: which shard a builder takes next, who holds it, and when a holder is dead.

Before building `NAME.tar`, a builder creates `NAME.tar.claim` (create-only: one small
single-request write, which GCS, fake-gcs-server and local folders all refuse to repeat). Runs
of one plan on one destination share it through claims: a run that finds a live claim goes on
to the next unclaimed shard and comes back to the claimed ones at the end (`try_claim`), or,
for a single shard, waits for it (`hold_claim`).

A claim records its machine (`OBJECTRON_WDS_HOST` when set, else the host name) and process.
It is dead when its lease expired, or when it was made on this machine by a process that no
longer runs (a run killed with SIGKILL leaves its claims behind; the next run on that machine
takes them over at once). The holder renews it every third of a lease, so a claim of a lost
machine dies at most one lease (DEFAULT_LEASE_SECONDS, 60 s) after the machine did.

Claims save work; correctness does not depend on them: shards are committed create-only, so a
duplicate build (two runs taking over one dead claim at the same moment) can only lose the race
to commit, never corrupt a shard.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tasks.storage import AlreadyExists, ObjectNotFound, Storage

# A lost machine's shards are taken over at most a lease after it died (renewals come every
# third of a lease, so a holder survives two missed renewals, e.g. a storage hiccup of 40 s).
DEFAULT_LEASE_SECONDS = 60.0
LEASE_ENV = "OBJECTRON_WDS_CLAIM_LEASE_SECONDS"
HOST_ENV = "OBJECTRON_WDS_HOST"
POLL_SECONDS = 1.0
_log = logging.getLogger("objectron_wds.claims")


@dataclass(frozen=True)
class Claim:
    token: str
    owner: str
    host: str
    pid: int
    pid_start: str | None
    expires: float

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Claim:
        return cls(**json.loads(data))

    def describe(self) -> str:
        return f"{self.owner} (pid {self.pid} on {self.host})"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc), or None if it is gone.
    With the pid it identifies a process even after its pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def this_host() -> str:
    """The machine a claim is made on: `OBJECTRON_WDS_HOST` when set (tests set one per simulated
    machine; on real machines the host name is right), else the host name."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def configured_lease_seconds() -> float:
    """The lease of new claims: `OBJECTRON_WDS_CLAIM_LEASE_SECONDS` when set, else 60 s."""
    text = os.environ.get(LEASE_ENV)
    if not text:
        return DEFAULT_LEASE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ValueError(f"{LEASE_ENV} must be a positive number of seconds, got {text!r}")
    return value


def is_live(claim: Claim, now: float | None = None) -> bool:
    if (now if now is not None else time.time()) > claim.expires:
        return False
    if claim.host == this_host():
        return _process_start(claim.pid) == claim.pid_start
    return True


def new_claim(owner: str, lease_seconds: float) -> Claim:
    pid = os.getpid()
    return Claim(
        token=uuid.uuid4().hex,
        owner=owner,
        host=this_host(),
        pid=pid,
        pid_start=_process_start(pid),
        expires=time.time() + lease_seconds,
    )


def claim_name(tar_name: str) -> str:
    return f"{tar_name}.claim"


def try_claim(
    dest: Storage,
    tar_name: str,
    *,
    owner: str,
    log: Callable[[str], None],
    lease_seconds: float | None = None,
) -> HeldClaim | Claim:
    """Claim `tar_name` for this process, taking over a dead claim, without waiting.

    Returns the `HeldClaim` (renewed until `release`d), or the live `Claim` of another builder.
    """
    lease = lease_seconds if lease_seconds is not None else configured_lease_seconds()
    name = claim_name(tar_name)
    unreadable = 0
    while True:
        mine = new_claim(owner, lease)
        try:
            # Not durable: after a crash the claim is dead anyway (its process is gone).
            dest.create_bytes(name, mine.to_json(), durable=False)
            return _RENEWER.add(dest, name, mine, lease)
        except AlreadyExists:
            pass
        try:
            theirs = Claim.from_json(dest.read_bytes(name))
        except ObjectNotFound:
            continue  # released just now: try again
        except (ValueError, TypeError):
            unreadable += 1
            if unreadable < 3:
                time.sleep(0.1)
                continue  # half-visible just now: try again
            # Not a claim any builder wrote whole (a crash mid-write on a local disk): dead.
            log(f"{tar_name}: removing an unreadable claim object")
            dest.delete(name)
            continue
        if is_live(theirs):
            return theirs
        log(f"{tar_name}: taking over the dead claim of {theirs.describe()}")
        dest.delete(name)


def release(held: HeldClaim) -> None:
    """Stop renewing `held` and delete it, unless another builder has taken it over since."""
    _RENEWER.remove(held)
    current: Claim | None
    try:
        current = Claim.from_json(held.dest.read_bytes(held.name))
    except (ObjectNotFound, ValueError, TypeError):
        current = None
    if current is not None and current.token == held.claim.token:
        held.dest.delete(held.name)


@contextmanager
def hold_claim(
    dest: Storage,
    tar_name: str,
    *,
    owner: str,
    done: Callable[[], bool],
    log: Callable[[str], None],
    lease_seconds: float | None = None,
) -> Iterator[bool]:
    """Yield True while this builder holds the claim on `tar_name`, or False once `done()` says
    the shard was completed by whoever held a live claim (waiting for it meanwhile). The claim
    is renewed while held and removed at the end."""
    waited_for: str | None = None
    while True:
        attempt = try_claim(dest, tar_name, owner=owner, log=log, lease_seconds=lease_seconds)
        if isinstance(attempt, HeldClaim):
            break
        if done():
            yield False
            return
        if waited_for != attempt.token:
            log(f"{tar_name}: already being built by {attempt.describe()}; waiting for it")
            waited_for = attempt.token
        time.sleep(POLL_SECONDS)
    try:
        yield True
    finally:
        release(attempt)


@dataclass(eq=False)
class HeldClaim:
    """A claim this process made and renews."""

    dest: Storage
    name: str
    claim: Claim
    lease_seconds: float
    due: float  # time.monotonic() of the next renewal
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: bool = False


class _Renewer:
    """One thread per process renews every claim the process holds, a third of a lease before
    it runs out. (A thread per claim cost a thread start and join per shard, several ms each
    while other builds hold the GIL: benchmarks/RESULTS.md.)"""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._held: list[HeldClaim] = []
        self._thread: threading.Thread | None = None

    def add(self, dest: Storage, name: str, claim: Claim, lease_seconds: float) -> HeldClaim:
        held = HeldClaim(dest, name, claim, lease_seconds, time.monotonic() + lease_seconds / 3)
        with self._wake:
            self._held.append(held)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="renew claims", daemon=True)
                self._thread.start()
            self._wake.notify()
        return held

    def remove(self, held: HeldClaim) -> None:
        # Under the claim's lock, so no renewal can write the claim again after it is removed.
        with held.lock:
            held.released = True
        with self._wake:
            self._held.remove(held)

    def _run(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                due = [held for held in self._held if held.due <= now]
                if not due:
                    next_due = min((held.due for held in self._held), default=now + 60)
                    self._wake.wait(next_due - now)
                    continue
            for held in due:
                self._renew(held)

    @staticmethod
    def _renew(held: HeldClaim) -> None:
        with held.lock:
            if held.released:
                return
            renewed = replace(held.claim, expires=time.time() + held.lease_seconds)
            try:
                held.dest.replace_bytes(held.name, renewed.to_json())
            except Exception:  # the next round tries again; the lease is long
                _log.warning("could not renew the claim %s; trying again", held.name)
                held.due = time.monotonic() + min(held.lease_seconds / 10, 10.0)
                return
            held.due = time.monotonic() + held.lease_seconds / 3


_RENEWER = _Renewer()


def remove_dead_claims(dest: Storage, names: set[str]) -> list[str]:
    """Delete the claims (among `names`, a listing of `dest`) left by runs that died after
    their shard was committed. Returns the names removed."""
    removed = []
    for name in sorted(n for n in names if n.endswith(".tar.claim")):
        if name.removesuffix(".claim") not in names:
            continue  # the next build of that shard takes the claim over if it is dead
        try:
            claim = Claim.from_json(dest.read_bytes(name))
        except (ObjectNotFound, ValueError, TypeError):
            continue
        if not is_live(claim):
            dest.delete(name)
            removed.append(name)
    return removed
