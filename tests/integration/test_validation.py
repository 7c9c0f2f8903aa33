"""Bad input is refused with a message that names the field, and never changes stored state."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .harness import (
    ServerProcess,
    apply,
    apply_refused,
    component,
    component_names,
    expect_status,
    register,
    secret,
)

pytestmark = pytest.mark.integration

SELECTOR = "t-val=placed"


def redis(name: str, *items: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A state.redis component with a valid host plus `items`; `spec` overrides type or version."""
    manifest = component(
        name,
        SELECTOR,
        type="state.redis",
        metadata=[{"name": "redisHost", "value": "localhost:6379"}, *items],
    )
    manifest["spec"].update(spec)
    return manifest


def missing_host(name: str) -> dict[str, Any]:
    manifest = redis(name)
    manifest["spec"]["metadata"] = [{"name": "redisDB", "value": "0"}]
    return manifest


def with_selector(name: str, selector: str) -> dict[str, Any]:
    return component(name, selector)


# (case id, document, substrings of which one must appear in an error's field or message)
BAD_DOCUMENTS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("unknown-type", redis("val-bad", type="state.no-such-store"), ("spec.type",)),
    ("unknown-version", redis("val-bad", version="v9"), ("spec.version",)),
    ("missing-required-field", missing_host("val-bad"), ("redisHost",)),
    (
        "wrong-value-type",
        redis("val-bad", {"name": "redisDB", "value": "not-a-number"}),
        ("redisDB", "metadata[1]"),
    ),
    (
        "outside-allowed-values",
        redis("val-bad", {"name": "redisType", "value": "ring"}),
        ("redisType", "metadata[1]"),
    ),
    (
        "plaintext-sensitive-field",
        redis("val-bad", {"name": "redisPassword", "value": "hunter2"}),
        ("redisPassword", "metadata[1]"),
    ),
    (
        "plaintext-field-sensitive-by-name",
        component(
            "val-bad",
            SELECTOR,
            metadata=[
                {"name": "url", "value": "http://x.invalid/"},
                {"name": "securityToken", "value": "hunter2"},
            ],
        ),
        ("securityToken", "metadata[1]"),
    ),
    (
        "secret-ref-to-missing-secret",
        redis(
            "val-bad", {"name": "redisPassword", "secretKeyRef": {"name": "val-no-such-secret", "key": "pw"}}
        ),
        ("val-no-such-secret", "metadata[1]"),
    ),
    ("invalid-selector", with_selector("val-bad", "t-val in (a"), ("rrm.io/selector", "annotations")),
    ("name-not-dns-1123", redis("Val_Bad"), ("metadata.name",)),
]


@pytest.fixture(scope="module")
def placed(server: ServerProcess) -> None:
    """A runtime the selector matches and a secret in use, so refused documents would have had an effect."""
    register(server.admin, "val-runtime", labels={"t-val": "placed"})
    apply(
        server.admin,
        [
            secret("val-used", {"password": "in-use"}),
            redis(
                "val-user", {"name": "redisPassword", "secretKeyRef": {"name": "val-used", "key": "password"}}
            ),
        ],
    )


def stored(admin: httpx.Client) -> tuple[Any, Any, Any]:
    """Everything a refused apply must leave alone."""
    return (
        expect_status(admin.get("/api/v1/components"), 200).json(),
        expect_status(admin.get("/api/v1/secrets"), 200).json(),
        expect_status(admin.get("/api/v1/components/val-user/history"), 200).json(),
    )


def assert_names(detail: list[dict[str, Any]], document: int, expected: tuple[str, ...]) -> None:
    for error in detail:
        text = f"{error.get('field')} {error.get('message')}"
        if error.get("document") == document and any(e in text for e in expected):
            return
    raise AssertionError(f"no error for document {document} names any of {expected}: {detail}")


@pytest.mark.usefixtures("placed")
@pytest.mark.parametrize(
    ("doc", "expected"), [c[1:] for c in BAD_DOCUMENTS], ids=[c[0] for c in BAD_DOCUMENTS]
)
def test_bad_document_is_refused_naming_the_field(
    admin: httpx.Client, doc: dict[str, Any], expected: tuple[str, ...]
) -> None:
    before = stored(admin)
    detail = apply_refused(admin, [doc])
    assert_names(detail, 0, expected)
    assert all(set(e) >= {"document", "kind", "name", "field", "message"} for e in detail), detail
    assert stored(admin) == before
    assert admin.get(f"/api/v1/components/{doc['metadata']['name']}/history").status_code == 404


@pytest.mark.usefixtures("placed")
def test_a_batch_with_one_bad_document_stores_nothing(admin: httpx.Client) -> None:
    before = stored(admin)
    batch = [
        secret("val-batch-secret", {"token": "t"}),
        component("val-batch-ok", SELECTOR),
        redis("val-batch-bad", type="state.no-such-store"),
    ]
    detail = apply_refused(admin, batch)
    assert_names(detail, 2, ("spec.type",))
    assert not [e for e in detail if e.get("document") in (0, 1)], f"valid documents reported: {detail}"
    assert stored(admin) == before
    assert "val-batch-ok" not in component_names(admin)
    assert admin.get("/api/v1/components/val-batch-ok/history").status_code == 404


@pytest.mark.usefixtures("placed")
def test_deleting_a_secret_in_use_conflicts_and_changes_nothing(admin: httpx.Client) -> None:
    before = stored(admin)
    refused = admin.delete("/api/v1/secrets/val-used")
    assert refused.status_code == 409, refused.text
    assert stored(admin) == before
    used = {s["name"]: s for s in admin.get("/api/v1/secrets").json()}["val-used"]
    assert used["used_by"] == ["val-user"]
    assert "in-use" not in refused.text

    expect_status(admin.delete("/api/v1/components/val-user"), 204)
    expect_status(admin.delete("/api/v1/secrets/val-used"), 204)
    assert "val-used" not in [s["name"] for s in admin.get("/api/v1/secrets").json()]


def test_unknown_names_answer_404(admin: httpx.Client) -> None:
    for method, path in (
        ("GET", "/api/v1/runtimes/val-nobody"),
        ("GET", "/api/v1/components/val-nothing"),
        ("DELETE", "/api/v1/components/val-nothing"),
        ("DELETE", "/api/v1/secrets/val-nothing"),
    ):
        assert admin.request(method, path).status_code == 404, f"{method} {path}"


def test_applies_the_fast_path_leaves_to_the_app_are_refused_as_before(server: ServerProcess) -> None:
    """`POST /api/v1/apply` is served before FastAPI when its token and body are usual; every other request
    is answered by the app, with the same refusals as any admin route, and stores nothing."""
    admin = server.admin
    document = redis("val-fast-path")
    before = component_names(admin)
    viewer = expect_status(admin.post("/api/v1/tokens", json={"role": "viewer"}), 201).json()["token"]
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        body = {"documents": [document]}
        for attempt in ("grant read from the database", "grant cached"):
            refused = anonymous.post(
                "/api/v1/apply", json=body, headers={"Authorization": f"Bearer {viewer}"}
            )
            assert refused.status_code == 403, attempt
            assert refused.json() == {"detail": "this token may only read"}, attempt
        missing = anonymous.post("/api/v1/apply", json=body)
        assert missing.status_code == 401
        assert missing.json() == {"detail": "missing bearer token"}
    shapes: dict[str, Any] = {
        "documents not a list": ({"documents": "redis"}, ["body", "documents"]),
        "no documents": ({"dry_run": True}, ["body", "documents"]),
        "dry_run not a boolean": ({"documents": [document], "dry_run": "perhaps"}, ["body", "dry_run"]),
    }
    for what, (shape, location) in shapes.items():
        refused = admin.post("/api/v1/apply", json=shape)
        assert refused.status_code == 422, what
        assert [problem["loc"] for problem in refused.json()["detail"]] == [location], what
    as_text = admin.post(
        "/api/v1/apply", content=b'{"documents": []}', headers={"Content-Type": "text/plain"}
    )
    assert as_text.status_code == 422
    dry = expect_status(admin.post("/api/v1/apply", json={"documents": [document], "dry_run": True}), 200)
    assert [r["action"] for r in dry.json()["results"]] == ["created"]
    assert component_names(admin) == before
    expect_status(admin.post("/api/v1/apply", json={"documents": [document]}), 200)
    assert component_names(admin) == sorted([*before, "val-fast-path"])
