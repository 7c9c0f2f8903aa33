"""The plan of `rrm apply` (rrm.server.apply_plan): what a request would change, decided without a store."""

from __future__ import annotations

import ast
import inspect
from typing import Any

import pytest

from rrm.server import apply, apply_plan
from rrm.server.apply_plan import (
    InvalidInput,
    Problem,
    Result,
    SecretUser,
    Stored,
    StoredComponent,
    StoredSecret,
    plan,
    read_request,
)

SELECTOR = "rrm.io/selector"


def secret(name: str = "creds", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": data or {"token": "t"},
    }


def component(
    name: str = "logging", *, selector: str | None = "env=prod", **annotations: str
) -> dict[str, Any]:
    if selector is not None:
        annotations[SELECTOR] = selector
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "type": "bindings.http",
            "version": "v1",
            "metadata": [
                {"name": "url", "value": "https://logging.example.com"},
                {"name": "securityToken", "secretKeyRef": {"name": "creds", "key": "token"}},
            ],
        },
    }


def policy(name: str = "careful") -> dict[str, Any]:
    return {"apiVersion": "rrm.io/v1", "kind": "RolloutPolicy", "metadata": {"name": name}, "spec": {}}


def fields(exc: pytest.ExceptionInfo[InvalidInput]) -> list[tuple[int | None, str]]:
    return [(p.document, p.field) for p in exc.value.problems]


def test_a_new_secret_policy_and_component_are_created_in_that_order() -> None:
    request = read_request([component(**{"rrm.io/rollout-policy": "careful"}), policy(), secret()], {}, set())
    changes = plan(request, Stored())
    assert changes.results == (
        Result("Secret", "creds", "created", 0),
        Result("RolloutPolicy", "careful", "created", None),
        Result("Component", "logging", "created", 1),
    )
    assert [s.name for s in changes.secrets] == ["creds"] and changes.secrets[0].created
    assert [p.policy.name for p in changes.policies] == ["careful"]
    assert [(c.name, c.action, c.previous) for c in changes.components] == [("logging", "created", None)]
    assert changes.components[0].manifest["spec"]["metadata"][0]["value"] == "https://logging.example.com"


def test_what_is_stored_unchanged_is_not_written_again() -> None:
    request = read_request([secret(), policy(), component()], {}, set())
    stored = Stored(
        secrets={"creds": StoredSecret(4, {"token": "t"})},
        policies={"careful": request.policies["careful"][1].spec()},
        components={"logging": StoredComponent(request.components["logging"][1], 7, 9)},
    )
    changes = plan(request, stored)
    assert (changes.secrets, changes.policies, changes.components) == ((), (), ())
    assert [(r.action, r.revision) for r in changes.results] == [
        ("unchanged", 4),
        ("unchanged", None),
        ("unchanged", 7),
    ]


def test_a_changed_component_takes_the_revision_after_the_highest_ever_used() -> None:
    request = read_request([component(selector="env=dev")], {"creds": {"token"}}, set())
    deleted_once = StoredComponent(None, None, 9)
    assert plan(request, Stored(components={"logging": deleted_once})).results == (
        Result("Component", "logging", "created", 10),
    )
    live = StoredComponent(component(), 9, 9)
    changes = plan(request, Stored(components={"logging": live}))
    assert changes.results == (Result("Component", "logging", "updated", 10),)
    assert changes.components[0].previous == 9


@pytest.mark.parametrize(("stored", "applied"), [(1, 1.0), (True, 1)], ids=["1 then 1.0", "true then 1"])
def test_a_value_equal_in_python_but_not_in_json_is_a_change(stored: Any, applied: Any) -> None:
    """Python's `1 == 1.0 == True` is not JSON's: the delivered manifest, and its hash, would differ."""

    def with_retries(value: Any) -> apply_plan.Request:
        document = component()
        document["spec"]["metadata"].append({"name": "retries", "value": value})
        return read_request([document], {"creds": {"token"}}, set())

    request, before = with_retries(applied), with_retries(stored).components["logging"][1]
    assert before == request.components["logging"][1]  # equal as Python values
    changes = plan(request, Stored(components={"logging": StoredComponent(before, 3, 3)}))
    assert changes.results == (Result("Component", "logging", "updated", 4),)


def test_a_component_is_normalized_into_a_copy_of_its_document() -> None:
    document = component()
    manifest = read_request([document], {"creds": {"token"}}, set()).components["logging"][1]
    assert manifest == document
    manifest["spec"]["metadata"][0]["value"] = "https://elsewhere.example.com"
    manifest["metadata"]["annotations"][SELECTOR] = "env=dev"
    assert document == component()  # the request's document is left as it came


def test_a_changed_secret_answers_its_current_revision_until_stored() -> None:
    request = read_request([secret(token="new")], {}, set())
    changes = plan(request, Stored(secrets={"creds": StoredSecret(3, {"token": "old"})}))
    assert changes.results == (Result("Secret", "creds", "updated", 3),)
    assert not changes.secrets[0].created and changes.secrets[0].data == {"token": "new"}


def test_a_secret_may_not_drop_a_key_a_stored_component_or_a_rollout_still_uses() -> None:
    request = read_request([secret(other="x")], {}, set())
    users = [
        SecretUser("component 'logging'", component(), "logging"),
        SecretUser("revision 2 of component 'audit', which its rollout still hands out", component("audit")),
    ]
    with pytest.raises(InvalidInput) as exc:
        plan(request, Stored(secret_users=users))
    assert [p.message for p in exc.value.problems] == [
        "key 'token' is still used by component 'logging'",
        "key 'token' is still used by revision 2 of component 'audit', which its rollout still hands out",
    ]
    assert fields(exc) == [(0, "data.token"), (0, "data.token")]


def test_a_component_replaced_in_the_same_request_no_longer_holds_the_key() -> None:
    replaced = component()
    replaced["spec"]["metadata"] = replaced["spec"]["metadata"][:1]
    request = read_request([secret(other="x"), replaced], {}, set())
    changes = plan(request, Stored(secret_users=[SecretUser("component 'logging'", component(), "logging")]))
    assert [r.action for r in changes.results] == ["created", "created"]


def test_a_component_may_use_a_secret_and_a_policy_of_the_same_request_only() -> None:
    with pytest.raises(InvalidInput) as exc:
        read_request([component(**{"rrm.io/rollout-policy": "careful"})], {}, set())
    assert fields(exc) == [
        (0, "spec.metadata[1].secretKeyRef.name"),
        (0, 'metadata.annotations["rrm.io/rollout-policy"]'),
    ]
    read_request([component(**{"rrm.io/rollout-policy": "careful"})], {"creds": {"token"}}, {"careful"})


def test_every_problem_of_a_request_is_named_and_warnings_are_kept_apart() -> None:
    bad_selector = component("a", selector="env in ()")
    no_selector = component("b", selector=None) | {"extra": 1}
    with pytest.raises(InvalidInput) as exc:
        read_request(
            ["text", secret(), secret(), bad_selector, no_selector, {"apiVersion": "x", "kind": "Y"}],
            {},
            set(),
        )
    assert fields(exc) == [
        (0, ""),
        (2, "metadata.name"),
        (5, "kind"),
        (3, 'metadata.annotations["rrm.io/selector"]'),
    ]
    request = read_request([secret(), no_selector], {}, set())
    assert [(w.document, w.field) for w in request.warnings] == [(1, "extra"), (1, "metadata.annotations")]
    assert plan(request, Stored()).warnings == request.warnings


def test_a_component_named_twice_is_refused() -> None:
    with pytest.raises(InvalidInput) as exc:
        read_request([component(), component()], {"creds": {"token"}}, set())
    assert exc.value.problems == [
        Problem(
            1, "Component", "logging", "metadata.name", "component 'logging' appears twice in this request"
        )
    ]


def test_compass_documents_are_left_to_the_compass_apply() -> None:
    application = {"apiVersion": "rrm.io/v1", "kind": "Application", "metadata": {"name": "shop"}}
    request = read_request([application], {}, set())
    assert plan(request, Stored()).results == ()


def _imports(module: object) -> set[str]:
    tree = ast.parse(inspect.getsource(module))  # type: ignore[arg-type]
    found = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return found | {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def test_the_plan_does_no_io_and_apply_does_not_import_the_rollout_controller() -> None:
    assert not {m for m in _imports(apply_plan) if m.startswith(("rrm.store", "rrm.server", "sqlalchemy"))}
    assert not {m for m in _imports(apply) if m.startswith("rrm.server.rollouts")}


def test_the_policies_named_are_those_component_documents_annotate() -> None:
    malformed = {"apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": ["not", "a", "mapping"]}
    documents: list[Any] = [
        component("a", **{"rrm.io/rollout-policy": "careful"}),
        component("b", **{"rrm.io/rollout-policy": "fast"}),
        component("c", **{"rrm.io/rollout-policy": ""}),
        component("d"),
        {**policy("ignored"), "metadata": {"name": "x", "annotations": {"rrm.io/rollout-policy": "no"}}},
        malformed,
        "not a document",
    ]
    assert apply_plan.policies_named(documents) == {"careful", "fast"}
