"""Rotation challenges: only a nonce this control plane issued, to this runtime, within its minute, passes."""

from __future__ import annotations

import pytest

from rrm.server.rotation import CHALLENGE_SECONDS, ChallengeRefused, check_challenge, issue_challenge

KEY = b"k" * 32
NOW = 1_800_000_000.0


def test_a_fresh_nonce_passes_for_the_runtime_it_was_issued_to() -> None:
    check_challenge(KEY, issue_challenge(KEY, "rt-1", now=NOW), "rt-1", now=NOW + CHALLENGE_SECONDS - 1)


def test_nonces_are_never_the_same() -> None:
    assert issue_challenge(KEY, "rt-1", now=NOW) != issue_challenge(KEY, "rt-1", now=NOW)


@pytest.mark.parametrize(
    ("key", "runtime", "at", "reason"),
    [
        (KEY, "rt-2", NOW, "issued to another runtime"),
        (KEY, "rt-1", NOW + CHALLENGE_SECONDS, "expired"),
        (b"o" * 32, "rt-1", NOW, "not issued by this control plane"),
    ],
    ids=["other-runtime", "expired", "other-key"],
)
def test_a_nonce_is_refused_elsewhere_later_or_under_another_key(
    key: bytes, runtime: str, at: float, reason: str
) -> None:
    nonce = issue_challenge(KEY, "rt-1", now=NOW)
    with pytest.raises(ChallengeRefused, match=reason):
        check_challenge(key, nonce, runtime, now=at)


@pytest.mark.parametrize("nonce", ["", "no-dot", "a.b", "é.é"])
def test_anything_not_issued_here_is_refused(nonce: str) -> None:
    with pytest.raises(ChallengeRefused, match="not issued by this control plane"):
        check_challenge(KEY, nonce, "rt-1", now=NOW)


def test_a_tampered_payload_is_refused() -> None:
    payload, mac = issue_challenge(KEY, "rt-1", now=NOW).split(".")
    forged = issue_challenge(KEY, "rt-2", now=NOW).split(".")[0]
    with pytest.raises(ChallengeRefused):
        check_challenge(KEY, f"{forged}.{mac}", "rt-2", now=NOW)
    assert payload != forged
