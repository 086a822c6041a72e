"""Claims: so two runs on one destination build each shard once.

Before building `NAME.tar`, a builder creates `NAME.tar.claim` (create-only: one small
single-request write, which GCS, fake-gcs-server and local folders all refuse to repeat). A run
that finds a live claim waits for the shard instead of building it too. A claim is dead when
its lease expired, or when it was made on this host by a process that no longer runs (a run
killed with SIGKILL leaves its claims behind; the next run takes them over at once).

Claims save work; correctness does not depend on them: shards are committed create-only, so a
duplicate build (two runs taking over one dead claim at the same moment) can only lose the race
to commit, never corrupt a shard.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tasks.storage import AlreadyExists, ObjectNotFound, Storage

DEFAULT_LEASE_SECONDS = 300.0
POLL_SECONDS = 1.0


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


def is_live(claim: Claim, now: float | None = None) -> bool:
    if (now if now is not None else time.time()) > claim.expires:
        return False
    if claim.host == socket.gethostname():
        return _process_start(claim.pid) == claim.pid_start
    return True


def new_claim(owner: str, lease_seconds: float) -> Claim:
    pid = os.getpid()
    return Claim(
        token=uuid.uuid4().hex,
        owner=owner,
        host=socket.gethostname(),
        pid=pid,
        pid_start=_process_start(pid),
        expires=time.time() + lease_seconds,
    )


def claim_name(tar_name: str) -> str:
    return f"{tar_name}.claim"


@contextmanager
def hold_claim(
    dest: Storage,
    tar_name: str,
    *,
    owner: str,
    done: Callable[[], bool],
    log: Callable[[str], None],
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> Iterator[bool]:
    """Yield True while this builder holds the claim on `tar_name`, or False once `done()` says
    the shard was completed by whoever held a live claim. The claim is renewed while held and
    removed at the end."""
    name = claim_name(tar_name)
    waited_for: str | None = None
    while True:
        mine = new_claim(owner, lease_seconds)
        try:
            dest.create_bytes(name, mine.to_json())
            break
        except AlreadyExists:
            pass
        try:
            theirs = Claim.from_json(dest.read_bytes(name))
        except (ObjectNotFound, ValueError, TypeError):
            continue  # released or half-visible just now: try again
        if not is_live(theirs):
            log(f"{tar_name}: taking over the dead claim of {theirs.describe()}")
            dest.delete(name)
            continue
        if done():
            yield False
            return
        if waited_for != theirs.token:
            log(f"{tar_name}: already being built by {theirs.describe()}; waiting for it")
            waited_for = theirs.token
        time.sleep(POLL_SECONDS)

    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_seconds / 3):
            renewed = Claim(**{**asdict(mine), "expires": time.time() + lease_seconds})
            dest.replace_bytes(name, renewed.to_json())

    renewer = threading.Thread(target=renew, name=f"renew {name}", daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join()
        current: Claim | None
        try:
            current = Claim.from_json(dest.read_bytes(name))
        except (ObjectNotFound, ValueError, TypeError):
            current = None
        if current is not None and current.token == mine.token:
            dest.delete(name)


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
