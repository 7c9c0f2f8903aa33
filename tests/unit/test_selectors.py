"""Label rules and Kubernetes label selectors: parsing, matching, canonical form, errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrm.core.labels import label_key_error, label_value_error, parse_label_args, validate_labels
from rrm.core.selectors import (
    Requirement,
    Selector,
    SelectorError,
    needs_rewrite,
    parse_selector,
    parse_stored_selector,
)

# --- label rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["env", "a", "A1", "my.name_x-1", "example.com/env", "rrm.io/selector", "a-b.c/D_e", "x" * 63, "in"],
)
def test_valid_label_keys(key: str) -> None:
    assert label_key_error(key) is None


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("", "name must not be empty"),
        ("example.com/", "name must not be empty"),
        ("/env", "prefix must not be empty"),
        ("a/b/c", "optional DNS subdomain prefix"),
        ("x" * 64, "at most 63"),
        ("-env", "name must consist"),
        ("env-", "name must consist"),
        ("env\n", "name must consist"),
        ("en v", "name must consist"),
        ("Example.com/env", "prefix must be a DNS-1123 subdomain"),
        ("exa_mple.com/env", "prefix must be a DNS-1123 subdomain"),
        (("a" * 60 + ".") * 4 + "a" * 10 + "/env", "prefix must be at most 253"),
        (3, "must be a string"),
    ],
)
def test_invalid_label_keys(key: object, fragment: str) -> None:
    error = label_key_error(key)
    assert error is not None and fragment in error


@pytest.mark.parametrize("value", ["", "prod", "A.b-c_1", "x" * 63])
def test_valid_label_values(value: str) -> None:
    assert label_value_error(value) is None


@pytest.mark.parametrize("value", ["x" * 64, "-prod", "prod.", "a b", "prod\n", "é", None])
def test_invalid_label_values(value: object) -> None:
    assert label_value_error(value) is not None


def test_validate_labels_names_each_bad_field() -> None:
    problems = validate_labels({"env": "prod", "-bad": "ok", "tier": "no spaces", "x/y/z": "-"})
    assert [field for field, _ in problems] == ["labels.-bad", "labels.tier", "labels.x/y/z", "labels.x/y/z"]
    assert "key" in problems[0][1] and "value" in problems[1][1]
    assert validate_labels({"env": "", "example.com/zone": "eu-1"}) == []


def test_parse_label_args_sets_and_removes() -> None:
    assert parse_label_args(["env=prod", "zone=", "old-", "example.com/x=a"]) == (
        {"env": "prod", "zone": "", "example.com/x": "a"},
        ["old"],
    )
    assert parse_label_args([]) == ({}, [])


@pytest.mark.parametrize("arg", ["env", "=prod", "-", "env=bad value", "bad key=x", "env=a=b", "-env-"])
def test_parse_label_args_rejects_and_names_the_argument(arg: str) -> None:
    with pytest.raises(ValueError, match="invalid label argument") as raised:
        parse_label_args(["ok=1", arg])
    assert repr(arg) in str(raised.value)


@pytest.mark.parametrize("args", [["env=a", "env=b"], ["env=a", "env-"], ["env-", "env-"]])
def test_parse_label_args_rejects_a_key_given_twice(args: list[str]) -> None:
    with pytest.raises(ValueError, match="more than once"):
        parse_label_args(args)


# --- parsing -------------------------------------------------------------------------------------------


def req(key: str, operator: str, *values: str) -> Requirement:
    return Requirement(key, operator, values)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        (" \t\r\n", []),
        ("env=prod", [req("env", "=", "prod")]),
        ("env==prod", [req("env", "=", "prod")]),
        ("env!=prod", [req("env", "!=", "prod")]),
        ("env=", [req("env", "=", "")]),
        ("env==", [req("env", "=", "")]),
        ("env!=", [req("env", "!=", "")]),
        ("env=,zone", [req("env", "=", ""), req("zone", "exists")]),
        ("region in (eu,us)", [req("region", "in", "eu", "us")]),
        ("region in(us,eu,us)", [req("region", "in", "eu", "us")]),
        ("region notin ( eu , us )", [req("region", "notin", "eu", "us")]),
        ("region in (,)", [req("region", "in", "")]),
        (
            "x in (foo,,baz),y,z notin (,)",
            [req("x", "in", "", "baz", "foo"), req("y", "exists"), req("z", "notin", "")],
        ),
        ("x in (a,)", [req("x", "in", "", "a")]),
        ("x in (,a)", [req("x", "in", "", "a")]),
        ("canary", [req("canary", "exists")]),
        ("!canary", [req("canary", "!")]),
        ("! canary", [req("canary", "!")]),
        ("in", [req("in", "exists")]),
        ("in in (in,notin)", [req("in", "in", "in", "notin")]),
        ("notin notin (in)", [req("notin", "notin", "in")]),
        ("x=in,y!=notin", [req("x", "=", "in"), req("y", "!=", "notin")]),
        ("example.com/zone=eu-1", [req("example.com/zone", "=", "eu-1")]),
        ("  b = 2 ,\ta\n=1 ", [req("a", "=", "1"), req("b", "=", "2")]),
        ("a=1,a=1", [req("a", "=", "1"), req("a", "=", "1")]),
    ],
)
def test_parse(text: str, expected: list[Requirement]) -> None:
    assert parse_selector(text) == Selector(tuple(expected))


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("env in (a", 9, "found end of string, expected ',' or ')'"),
        ("env in ()", 8, "an empty list: 'in' and 'notin' need at least one value"),
        ("env notin ( )", 12, "an empty list"),
        ("env in a)", 7, "expected '('"),
        ("env in", 6, "expected '('"),
        ("env in (a))", 10, "expected ',' or end of string"),
        ("env in (a b)", 10, "found 'b', expected ',' or ')'"),
        ("env in (a,(b))", 10, "found '(', expected a label value"),
        ("env=prod,", 9, "found end of string, expected '!' or a label key"),
        ("env=prod,,zone", 9, "found ',', expected '!' or a label key"),
        (",env", 0, "found ','"),
        ("=prod", 0, "found '='"),
        ("env prod", 4, "found 'prod', expected one of '=', '==', '!=', 'in', 'notin'"),
        ("env>1", 3, "found '>'"),
        ("env<1", 3, "found '<'"),
        ("env=prod zone", 9, "expected ',' or end of string"),
        ("env=(prod)", 4, "found '('"),
        ("env=!prod", 4, "found '!'"),
        ("!env=prod", 4, "found '=', expected ',' or end of string"),
        ("!", 1, "expected a label key"),
        ("!!env", 1, "found '!'"),
        ("-env=prod", 0, "invalid label key '-env'"),
        ("a/b/c", 0, "invalid label key"),
        ("env=prod-", 4, "invalid label value 'prod-'"),
        ("env in (eu,-us)", 11, "invalid label value '-us'"),
        ("env=" + "x" * 64, 4, "at most 63"),
        ("env\x0b=prod", 0, "invalid label key"),
    ],
)
def test_parse_errors_say_where_and_what(text: str, position: int, fragment: str) -> None:
    with pytest.raises(SelectorError) as raised:
        parse_selector(text)
    assert raised.value.position == position
    assert fragment in str(raised.value)
    assert f"at position {position}" in str(raised.value) and repr(text) in str(raised.value)


def test_a_stored_empty_list_keeps_the_meaning_it_had_when_rrm_accepted_it() -> None:
    """Stored before rrm refused `()`, when it read `()` as the empty value: it still is, and only there."""
    assert parse_stored_selector("env in ()") == parse_selector("env in (,)")
    assert parse_stored_selector("env notin ( ), tier") == parse_selector("env notin (,), tier")
    assert parse_stored_selector("env in ()").matches({"env": ""})
    assert not parse_stored_selector("env in ()").matches({"env": "prod"})
    assert needs_rewrite("env in ()") and needs_rewrite("a, env notin ()")
    assert not needs_rewrite("env in (,)") and not needs_rewrite("env in (")  # valid, or never accepted
    with pytest.raises(SelectorError, match="an empty list"):
        parse_selector("env in ()")
    with pytest.raises(SelectorError):
        parse_stored_selector("env in (")


@given(st.text(alphabet="ab=!(), in", max_size=20))
def test_the_stored_reading_accepts_everything_new_input_may_hold_with_the_same_meaning(text: str) -> None:
    try:
        parsed = parse_selector(text)
    except SelectorError:
        return
    assert parse_stored_selector(text) == parsed


def test_selector_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_selector("env in")


@pytest.mark.parametrize(
    ("key", "operator", "values"),
    [
        ("env", "==", ("a",)),
        ("env", "gt", ("1",)),
        ("env", "=", ()),
        ("env", "=", ("a", "b")),
        ("env", "in", ()),
        ("env", "exists", ("a",)),
        ("env", "!", ("a",)),
        ("-env", "exists", ()),
        ("env", "=", ("bad value",)),
    ],
)
def test_requirement_rejects_what_cannot_be_written(key: str, operator: str, values: tuple[str, ...]) -> None:
    with pytest.raises(SelectorError):
        Requirement(key, operator, values)


def test_canonical_form() -> None:
    selector = parse_selector(" zone notin (b , a,a), env == prod , !legacy,gpu, tier in (,)")
    assert str(selector) == "env=prod,gpu,!legacy,tier in (,),zone notin (a,b)"
    assert parse_selector(str(selector)) == selector
    assert str(parse_selector("")) == ""


# --- matching ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("", {}, True),
        ("", {"env": "prod"}, True),
        ("env=prod", {"env": "prod"}, True),
        ("env=prod", {"env": "dev"}, False),
        ("env=prod", {}, False),
        ("env==prod", {"env": "prod", "zone": "eu"}, True),
        ("env=", {"env": ""}, True),
        ("env=", {}, False),
        ("env!=prod", {"env": "dev"}, True),
        ("env!=prod", {"env": "prod"}, False),
        ("env!=prod", {}, True),
        ("region in (eu,us)", {"region": "us"}, True),
        ("region in (eu,us)", {"region": "ap"}, False),
        ("region in (eu,us)", {}, False),
        ("region in (,)", {"region": ""}, True),
        ("region in (,)", {"region": "eu"}, False),
        ("region notin (eu,us)", {"region": "ap"}, True),
        ("region notin (eu,us)", {"region": "eu"}, False),
        ("region notin (eu,us)", {}, True),
        ("canary", {"canary": ""}, True),
        ("canary", {"canary": "yes"}, True),
        ("canary", {}, False),
        ("!canary", {}, True),
        ("!canary", {"canary": ""}, False),
        ("env=prod,!canary,region in (eu)", {"env": "prod", "region": "eu"}, True),
        ("env=prod,!canary,region in (eu)", {"env": "prod", "region": "eu", "canary": "1"}, False),
        ("env=prod,env=dev", {"env": "prod"}, False),
        ("Env=prod", {"env": "prod"}, False),
    ],
)
def test_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    selector = parse_selector(text)
    assert selector.matches(labels) is expected
    assert all(r.matches(labels) for r in selector.requirements) is expected


# --- properties ----------------------------------------------------------------------------------------

# Small pools so that generated labels and selectors collide often; `in`/`notin` exercise the keyword rules.
KEYS = st.sampled_from(["env", "zone", "in", "notin", "example.com/tier", "A.b_c-1"])
VALUES = st.sampled_from(["", "prod", "dev", "in", "notin", "eu-1", "X.y_z"])
BLANK = st.sampled_from(["", " ", "\t", " \n ", "\r"])
LABELS = st.dictionaries(KEYS, VALUES, max_size=6)


@st.composite
def requirement_specs(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    operator = draw(st.sampled_from(["=", "==", "!=", "in", "notin", "exists", "!"]))
    if operator in ("exists", "!"):
        values: list[str] = []
    elif operator in ("in", "notin"):
        values = draw(st.lists(VALUES, min_size=1, max_size=4))
    else:
        values = [draw(VALUES)]
    return draw(KEYS), operator, values


def spec_text(draw: st.DrawFn, key: str, operator: str, values: list[str]) -> str:
    """Write one requirement the way a person might: optional blanks around every token."""

    def blank() -> str:
        return draw(BLANK)

    if operator == "exists":
        return key
    if operator == "!":
        return f"!{blank()}{key}"
    if operator in ("in", "notin"):
        items = f"{blank()},{blank()}".join(values) or ","  # `()` is refused; `(,)` is the empty value
        return f"{key} {operator}{blank()}({blank()}{items}{blank()})"
    return f"{key}{blank()}{operator}{blank()}{values[0]}"


@st.composite
def written_selectors(draw: st.DrawFn) -> tuple[str, list[tuple[str, str, list[str]]]]:
    specs = draw(st.lists(requirement_specs(), max_size=5))
    parts = [draw(BLANK) + spec_text(draw, *spec) + draw(BLANK) for spec in specs]
    return ",".join(parts), specs


def reference_match(specs: list[tuple[str, str, list[str]]], labels: dict[str, str]) -> bool:
    """Kubernetes' Requirement.Matches, written out longhand."""
    for key, operator, values in specs:
        if operator in ("=", "==", "in"):
            ok = key in labels and labels[key] in values
        elif operator in ("!=", "notin"):
            ok = key not in labels or labels[key] not in values
        elif operator == "exists":
            ok = key in labels
        else:
            ok = key not in labels
        if not ok:
            return False
    return True


@given(written_selectors())
def test_canonical_form_parses_back_to_the_same_selector(written: tuple[str, list]) -> None:
    selector = parse_selector(written[0])
    assert len(selector.requirements) == len(written[1])
    assert parse_selector(str(selector)) == selector
    assert str(parse_selector(str(selector))) == str(selector)


@given(written_selectors(), LABELS)
def test_matching_agrees_with_reference(written: tuple[str, list], labels: dict[str, str]) -> None:
    text, specs = written
    assert parse_selector(text).matches(labels) is reference_match(specs, labels)


@given(st.lists(requirement_specs(), max_size=5), LABELS)
def test_constructed_selectors_round_trip_and_match(specs: list, labels: dict[str, str]) -> None:
    operators = {"==": "="}
    selector = Selector(tuple(Requirement(k, operators.get(op, op), tuple(v)) for k, op, v in specs))
    assert parse_selector(str(selector)) == selector
    assert selector.matches(labels) is reference_match(specs, labels)


GRAMMAR_ALPHABET = "ab/.-_=!(),<> \t\n" + "in" + "notin" + "é\x00\x0b"


@given(
    st.one_of(
        st.text(),
        st.text(alphabet=GRAMMAR_ALPHABET),
        st.lists(
            st.sampled_from(
                ["a", "b", "in", "notin", "=", "==", "!=", "!", "(", ")", ",", " ", ">", "-", "/", "x.y"]
            )
        ).map("".join),
    )
)
def test_parser_only_ever_raises_selector_error(text: str) -> None:
    try:
        selector = parse_selector(text)
    except SelectorError as error:
        assert error.position is not None and 0 <= error.position <= len(text)
    else:
        assert parse_selector(str(selector)) == selector
