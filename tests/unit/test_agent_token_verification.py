"""The control plane's verification of agent tokens (`verify_agent_token`) against PyJWT's `jwt.decode` with
the options it used to call it with: the same tokens accepted, with the same claims, and the same refused."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from rrm.wire.agent_auth import (
    ALGORITHM,
    AUDIENCE,
    EXPIRED_TOKEN_MESSAGE,
    MAX_LIFETIME_SECONDS,
    NOT_YET_VALID_MESSAGE,
    AgentTokenError,
    generate_private_key,
    key_id,
    load_public_key,
    public_key_pem,
    sign_agent_token,
    unverified_key_id,
    verify_agent_token,
)

KEY = generate_private_key()
OTHER_KEY = generate_private_key()
KID = key_id(public_key_pem(KEY))
PUBLIC = load_public_key(public_key_pem(KEY))
NOW = int(time.time())


def pyjwt_accepts(token: str) -> bool:
    """What the control plane called before: PyJWT's decode with these options, and the lifetime check."""
    try:
        claims = jwt.decode(
            token,
            PUBLIC,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": ["sub", "exp", "iat", "aud"]},
            leeway=30,
        )
    except jwt.PyJWTError:
        return False
    return bool(claims["exp"] - claims["iat"] <= MAX_LIFETIME_SECONDS)


def accepts(token: str) -> bool:
    try:
        verify_agent_token(token, PUBLIC, KID)
    except AgentTokenError:
        return False
    return True


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: Any, claims: Any, key: Any = KEY) -> str:
    """A token of any header and claims (JSON values, or raw bytes), signed by `key`."""
    parts = [b64(v if isinstance(v, bytes) else json.dumps(v).encode()) for v in (header, claims)]
    signing_input = ".".join(parts)
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def padded() -> str:
    """A good token whose header segment carries base64 padding, signed with it."""
    header = json.dumps({**HEADER, "x": ""}).encode()
    while len(b64(header)) % 4 == 0:
        header += b" "
    header_segment = b64(header) + "=" * (-len(b64(header)) % 4)
    signing_input = f"{header_segment}.{b64(json.dumps(CLAIMS).encode())}"
    return f"{signing_input}.{b64(KEY.sign(signing_input.encode()))}"


HEADER = {"alg": ALGORITHM, "kid": KID, "typ": "JWT"}
CLAIMS = {"sub": "rt-1", "aud": AUDIENCE, "iat": NOW, "exp": NOW + 300}
GOOD = signed(HEADER, CLAIMS)


def without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


# tokens both must refuse (or both accept), whatever the reason
CASES: dict[str, str] = {
    "good": GOOD,
    "made by pyjwt": jwt.encode(CLAIMS, KEY, algorithm=ALGORITHM, headers={"kid": KID}),
    "signed by another key": signed(HEADER, CLAIMS, OTHER_KEY),
    "payload swapped after signing": ".".join(
        [GOOD.split(".")[0], b64(json.dumps({**CLAIMS, "sub": "rt-2"}).encode()), GOOD.split(".")[2]]
    ),
    "alg none": f"{b64(json.dumps({**HEADER, 'alg': 'none'}).encode())}.{GOOD.split('.')[1]}.",
    "alg HS256": signed({**HEADER, "alg": "HS256"}, CLAIMS),
    "no alg": signed(without(HEADER, "alg"), CLAIMS),
    "two segments": ".".join(GOOD.split(".")[:2]),
    "four segments": GOOD + ".x",
    "empty": "",
    "not base64": GOOD.replace(GOOD[3], "!", 1),
    "header not json": signed(b"{not json", CLAIMS),
    "header a list": signed([1], CLAIMS),
    "payload not json": signed(HEADER, b"nope"),
    "payload a list": signed(HEADER, [CLAIMS]),
    "no sub": signed(HEADER, without(CLAIMS, "sub")),
    "no exp": signed(HEADER, without(CLAIMS, "exp")),
    "no iat": signed(HEADER, without(CLAIMS, "iat")),
    "no aud": signed(HEADER, without(CLAIMS, "aud")),
    "sub null": signed(HEADER, {**CLAIMS, "sub": None}),
    "sub a number": signed(HEADER, {**CLAIMS, "sub": 7}),
    "other audience": signed(HEADER, {**CLAIMS, "aud": "someone-else"}),
    "audience list with ours": signed(HEADER, {**CLAIMS, "aud": ["x", AUDIENCE]}),
    "audience list without ours": signed(HEADER, {**CLAIMS, "aud": ["x"]}),
    "audience list of numbers": signed(HEADER, {**CLAIMS, "aud": [1, AUDIENCE]}),
    "audience a number": signed(HEADER, {**CLAIMS, "aud": 5}),
    "expired": signed(HEADER, {**CLAIMS, "iat": NOW - 400, "exp": NOW - 100}),
    "expired within leeway": signed(HEADER, {**CLAIMS, "iat": NOW - 300, "exp": NOW - 10}),
    "issued in the future": signed(HEADER, {**CLAIMS, "iat": NOW + 100, "exp": NOW + 400}),
    "issued in the future within leeway": signed(HEADER, {**CLAIMS, "iat": NOW + 10, "exp": NOW + 300}),
    "not before the future": signed(HEADER, {**CLAIMS, "nbf": NOW + 100}),
    "not before the past": signed(HEADER, {**CLAIMS, "nbf": NOW - 100}),
    "nbf a string": signed(HEADER, {**CLAIMS, "nbf": "soon"}),
    "exp a string": signed(HEADER, {**CLAIMS, "exp": "later"}),
    "iat a string": signed(HEADER, {**CLAIMS, "iat": "then"}),
    "jti a number": signed(HEADER, {**CLAIMS, "jti": 5}),
    "jti a string": signed(HEADER, {**CLAIMS, "jti": "j"}),
    "lives too long": signed(HEADER, {**CLAIMS, "exp": NOW + MAX_LIFETIME_SECONDS + 1}),
    "lives the longest allowed": signed(HEADER, {**CLAIMS, "exp": NOW + MAX_LIFETIME_SECONDS}),
    "truncated signature": GOOD[:-4],
    "no signature": GOOD.rsplit(".", 1)[0] + ".",
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_token_is_accepted_exactly_when_pyjwt_accepted_it(case: str) -> None:
    assert accepts(CASES[case]) == pyjwt_accepts(CASES[case])


def test_the_claims_of_a_good_token_and_of_one_the_agent_signs() -> None:
    claims = verify_agent_token(GOOD, PUBLIC, KID)
    assert (claims.runtime_id, claims.key_id, claims.expires_at) == ("rt-1", KID, float(NOW + 300))
    fresh = sign_agent_token(KEY, "rt-9", KID, lifetime=300)
    assert unverified_key_id(fresh) == KID
    assert verify_agent_token(fresh, PUBLIC, KID).runtime_id == "rt-9"


def test_expired_and_future_tokens_are_refused_with_the_messages_the_agent_knows() -> None:
    with pytest.raises(AgentTokenError, match=f"^{EXPIRED_TOKEN_MESSAGE}$"):
        verify_agent_token(CASES["expired"], PUBLIC, KID)
    with pytest.raises(AgentTokenError, match=f"^{NOT_YET_VALID_MESSAGE}$"):
        verify_agent_token(CASES["issued in the future"], PUBLIC, KID)


@pytest.mark.parametrize(
    "token",
    [
        padded(),  # signed as sent, padding and all (PyJWT takes it)
        signed(HEADER, {**CLAIMS, "exp": NOW + 300.5}),  # a time that is not an integer (PyJWT truncates it)
        signed(HEADER, {**CLAIMS, "iat": str(NOW)}),
        signed({**HEADER, "crit": ["exp"]}, CLAIMS),
        signed({**HEADER, "b64": False}, CLAIMS),
    ],
    ids=["padding", "float exp", "iat as a numeric string", "crit", "b64"],
)
def test_what_no_agent_sends_is_refused_even_where_pyjwt_took_it(token: str) -> None:
    with pytest.raises(AgentTokenError):
        verify_agent_token(token, PUBLIC, KID)


def test_the_key_id_is_read_from_the_header_alone() -> None:
    assert unverified_key_id(GOOD) == KID
    for token in ("", "e30.x.y", signed({**HEADER, "kid": ""}, CLAIMS), signed({**HEADER, "kid": 3}, CLAIMS)):
        with pytest.raises(AgentTokenError):
            unverified_key_id(token)
