"""Claims are renewed while held (by one thread for the whole process) and never written again
once released."""

from __future__ import annotations

import time
from pathlib import Path

from tasks.claims import Claim, _Renewer, claim_name, hold_claim, is_live, new_claim
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
