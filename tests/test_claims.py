"""Claims are renewed while held (by one thread for the whole process) and never written again
once released."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tasks.claims import (
    _RENEWER,
    DEFAULT_LEASE_SECONDS,
    HOST_ENV,
    LEASE_ENV,
    Claim,
    HeldClaim,
    _Renewer,
    claim_name,
    configured_lease_seconds,
    hold_claim,
    is_live,
    new_claim,
    release,
    try_claim,
)
from tasks.storage import LocalStorage

LEASE = 0.9  # renewed every 0.3 s


def _claim(dest: LocalStorage, tar: str) -> Claim | None:
    path = dest.root / claim_name(tar)
    return Claim.from_json(path.read_bytes()) if path.exists() else None


def test_held_claims_are_renewed_and_released_claims_stay_released(tmp_path: Path) -> None:
    dest = LocalStorage(tmp_path)
    with (
        hold_claim(dest, "a.tar", owner="test", done=lambda: False, log=print, lease_seconds=LEASE),
        hold_claim(dest, "b.tar", owner="test", done=lambda: False, log=print, lease_seconds=LEASE),
    ):
        first = {name: _claim(dest, name) for name in ("a.tar", "b.tar")}
        time.sleep(3 * LEASE)  # three leases: without renewal both would have expired
        for name in ("a.tar", "b.tar"):
            now = _claim(dest, name)
            before = first[name]
            assert now is not None and before is not None
            assert now.token == before.token
            assert now.expires > before.expires
            assert is_live(now), f"{name}: the claim expired while held"
    assert _claim(dest, "a.tar") is None and _claim(dest, "b.tar") is None
    time.sleep(LEASE)  # past the next renewal of the released claims
    assert not list(tmp_path.iterdir()), "a released claim was written again"


def test_a_renewal_that_races_the_release_writes_nothing(tmp_path: Path) -> None:
    """The renewal thread picks the due claims, then renews them one by one; a claim released
    (and deleted) in between must not be written back. That window is too short to hit by
    timing, so play its second half directly: the late renewal of a removed claim."""
    dest = LocalStorage(tmp_path)
    name = claim_name("a.tar")
    claim = new_claim("test", 60.0)
    dest.create_bytes(name, claim.to_json(), durable=False)
    renewer = _Renewer()
    held = renewer.add(dest, name, claim, 60.0)
    _Renewer._renew(held)  # held: renewed
    renewed = _claim(dest, "a.tar")
    assert renewed is not None and renewed.expires > claim.expires
    renewer.remove(held)
    dest.delete(name)
    _Renewer._renew(held)  # the renewal that had picked it before the release
    assert not list(tmp_path.iterdir()), "a released claim was written again"


def test_a_claim_of_another_machine_lives_until_its_lease_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Machines are told apart by OBJECTRON_WDS_HOST: on another machine the claim's process
    cannot be looked up, so only its lease says whether it is dead."""
    dest = LocalStorage(tmp_path)
    monkeypatch.setenv(HOST_ENV, "machine-a")
    held = try_claim(dest, "a.tar", owner="run a", log=print, lease_seconds=60.0)
    assert isinstance(held, HeldClaim) and held.claim.host == "machine-a"
    _RENEWER.remove(held)  # machine a is lost: nobody renews its claim
    dead_process = replace(held.claim, pid_start="not this process")
    dest.replace_bytes(claim_name("a.tar"), dead_process.to_json())

    monkeypatch.setenv(HOST_ENV, "machine-b")
    taken: list[str] = []
    other = try_claim(dest, "a.tar", owner="run b", log=taken.append, lease_seconds=60.0)
    assert isinstance(other, Claim) and other.owner == "run a"  # live: its lease runs
    assert not is_live(dead_process, now=dead_process.expires + 1)
    expired = replace(dead_process, expires=time.time() - 1)
    dest.replace_bytes(claim_name("a.tar"), expired.to_json())
    mine = try_claim(dest, "a.tar", owner="run b", log=taken.append, lease_seconds=60.0)
    assert isinstance(mine, HeldClaim) and mine.claim.owner == "run b"
    assert taken == [f"a.tar: taking over the dead claim of run a (pid {os.getpid()} on machine-a)"]
    release(mine)
    assert not list(tmp_path.iterdir())

    # Back on machine a (restarted): its own dead process's claim is dead at once.
    monkeypatch.setenv(HOST_ENV, "machine-a")
    dest.create_bytes(claim_name("a.tar"), dead_process.to_json(), durable=False)
    assert not is_live(dead_process)


def test_lease_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LEASE_ENV, raising=False)
    assert configured_lease_seconds() == DEFAULT_LEASE_SECONDS == 60.0
    monkeypatch.setenv(LEASE_ENV, "12.5")
    assert configured_lease_seconds() == 12.5
    monkeypatch.setenv(LEASE_ENV, "soon")
    with pytest.raises(ValueError, match=LEASE_ENV):
        configured_lease_seconds()


def test_an_unreadable_claim_object_is_removed_and_taken(tmp_path: Path) -> None:
    dest = LocalStorage(tmp_path)
    dest.create_bytes(claim_name("a.tar"), b'{"token": "cut sho', durable=False)
    said: list[str] = []
    held = try_claim(dest, "a.tar", owner="run", log=said.append, lease_seconds=60.0)
    assert isinstance(held, HeldClaim)
    assert said == ["a.tar: removing an unreadable claim object"]
    release(held)
