"""Kubernetes label selectors (the string syntax of k8s.io/apimachinery `labels.Parse`) for placement.

    env=prod, tier!=cache, region in (eu,us), track notin (canary), gpu, !legacy

Requirements separated by commas must all hold; the empty selector matches every label set. As in
Kubernetes, `!=` and `notin` also match when the key is absent, the empty string is a valid value
(`env=`, `env in (,prod)`), and `in`/`notin` are keywords only where an operator is expected. An empty list,
`env in ()`, is refused: Kubernetes refuses an empty set for `in` and `notin`. Earlier versions of rrm took it
for the empty value, `env in (,)`, and may have stored it: `parse_stored_selector` reads stored selectors with
that meaning, so that data accepted then neither stops the server nor changes where anything is placed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from rrm.core.labels import label_key_error, label_value_error

EQUALS = "="
NOT_EQUALS = "!="
IN = "in"
NOT_IN = "notin"
EXISTS = "exists"
DOES_NOT_EXIST = "!"

_SET_OPERATORS = (IN, NOT_IN)
_VALUELESS_OPERATORS = (EXISTS, DOES_NOT_EXIST)
_NEGATIVE_OPERATORS = (NOT_EQUALS, NOT_IN)


class SelectorError(ValueError):
    """A selector that does not parse or a requirement that cannot exist; `position` is set when parsing."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


@dataclass(frozen=True)
class Requirement:
    """One condition on one label. `==` is stored as `=`; values are kept sorted and without duplicates."""

    key: str
    operator: str
    values: tuple[str, ...] = ()
    _value_set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (error := label_key_error(self.key)) is not None:
            raise SelectorError(f"invalid label key {self.key!r}: {error}")
        for value in self.values:
            if (error := label_value_error(value)) is not None:
                raise SelectorError(f"invalid label value {value!r}: {error}")
        if self.operator in _VALUELESS_OPERATORS:
            wanted = "no values"
            ok = not self.values
        elif self.operator in _SET_OPERATORS:
            wanted = "at least one value"
            ok = bool(self.values)
        elif self.operator in (EQUALS, NOT_EQUALS):
            wanted = "exactly one value"
            ok = len(self.values) == 1
        else:
            raise SelectorError(f"unknown selector operator {self.operator!r}")
        if not ok:
            raise SelectorError(f"operator {self.operator!r} takes {wanted}, got {list(self.values)}")
        object.__setattr__(self, "values", tuple(sorted(set(self.values))))
        object.__setattr__(self, "_value_set", frozenset(self.values))

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        operator = self.operator
        if operator in _NEGATIVE_OPERATORS:
            return value not in self._value_set  # an absent key (None) is in no value set
        if operator == EXISTS:
            return value is not None
        if operator == DOES_NOT_EXIST:
            return value is None
        return value in self._value_set

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return f"!{self.key}"
        if self.operator in _SET_OPERATORS:
            items = ",".join(self.values)
            return f"{self.key} {self.operator} ({items or ','})"  # only the empty value: `(,)`, not `()`
        return f"{self.key}{self.operator}{self.values[0]}"


@dataclass(frozen=True)
class Selector:
    """Requirements that must all hold, kept sorted so equal selectors compare and print equally."""

    requirements: tuple[Requirement, ...] = ()

    def __post_init__(self) -> None:
        ordered = sorted(self.requirements, key=lambda r: (r.key, r.operator, r.values))
        object.__setattr__(self, "requirements", tuple(ordered))

    def matches(self, labels: Mapping[str, str]) -> bool:
        for requirement in self.requirements:  # noqa: SIM110 - twice as fast as all() on the placement path
            if not requirement.matches(labels):
                return False
        return True

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def parse_selector(text: str) -> Selector:
    """Parse the Kubernetes selector syntax; raises SelectorError saying where and what was expected."""
    return _Parser(text).selector()


def parse_stored_selector(text: str) -> Selector:
    """A selector read back from the store: as `parse_selector`, except that an empty list `()` is the empty
    value, the meaning rrm gave it when it still accepted it (Kubernetes keeps stored objects working when
    validation tightens, and checks only new input)."""
    return _Parser(text, empty_list_is_empty_value=True).selector()


def needs_rewrite(text: str) -> bool:
    """Whether a stored selector is one only `parse_stored_selector` reads (an empty list)."""
    try:
        parse_selector(text)
    except SelectorError:
        try:
            parse_stored_selector(text)
        except SelectorError:
            return False
        return True
    return False


class _Kind(Enum):
    WORD = "word"
    SYMBOL = "symbol"
    END = "end"


class _Token(NamedTuple):
    kind: _Kind
    text: str
    position: int


_TOKEN = re.compile(  # Kubernetes' whitespace set and symbols; `<`, `>` are symbols so `a>1` fails cleanly
    r"[ \t\r\n]*(?:(?P<symbol>!=|==|[=!(),<>])|(?P<word>[^ \t\r\n=!(),<>]+))"
)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    for match in _TOKEN.finditer(text):  # every non-blank character is a symbol or part of a word
        symbol, word = match.group("symbol", "word")
        if symbol:
            tokens.append(_Token(_Kind.SYMBOL, symbol, match.start("symbol")))
        else:
            tokens.append(_Token(_Kind.WORD, word, match.start("word")))
    tokens.append(_Token(_Kind.END, "", len(text)))
    return tokens


class _Parser:
    """Recursive descent over the token list; one method per grammar rule."""

    def __init__(self, text: str, *, empty_list_is_empty_value: bool = False) -> None:
        self.text = text
        self.empty_list_is_empty_value = empty_list_is_empty_value
        self.tokens = _tokenize(text)
        self.index = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind is not _Kind.END:
            self.index += 1
        return token

    def at_requirement_end(self) -> bool:
        token = self.peek()
        return token.kind is _Kind.END or token.text == ","

    def error(self, token: _Token, problem: str) -> SelectorError:
        return SelectorError(
            f"invalid selector {self.text!r} at position {token.position}: {problem}", token.position
        )

    def unexpected(self, token: _Token, expected: str) -> SelectorError:
        found = "end of string" if token.kind is _Kind.END else f"'{token.text}'"
        return self.error(token, f"found {found}, expected {expected}")

    def selector(self) -> Selector:
        """selector := "" | requirement ("," requirement)*"""
        if self.peek().kind is _Kind.END:
            return Selector()
        requirements = [self.requirement()]
        while (token := self.take()).kind is not _Kind.END:
            if token.text != ",":
                raise self.unexpected(token, "',' or end of string")
            requirements.append(self.requirement())
        return Selector(tuple(requirements))

    def requirement(self) -> Requirement:
        """requirement := "!" KEY | KEY | KEY ("=" | "==" | "!=") VALUE? | KEY ("in" | "notin") list"""
        token = self.take()
        negated = token.text == "!"
        if negated:
            token = self.take()
        if token.kind is not _Kind.WORD:
            raise self.unexpected(token, "a label key" if negated else "'!' or a label key")
        key = self.key(token)
        if negated:
            return Requirement(key, DOES_NOT_EXIST)
        if self.at_requirement_end():
            return Requirement(key, EXISTS)
        operator = self.take()
        if operator.text in ("=", "==", "!="):
            return Requirement(key, NOT_EQUALS if operator.text == "!=" else EQUALS, (self.exact_value(),))
        if operator.kind is _Kind.WORD and operator.text in _SET_OPERATORS:
            return Requirement(key, operator.text, self.value_list())
        raise self.unexpected(operator, "one of '=', '==', '!=', 'in', 'notin', ',' or end of string")

    def exact_value(self) -> str:
        """An absent value is the empty value, as in Kubernetes: `env=` selects `env: ""`."""
        if self.at_requirement_end():
            return ""
        token = self.take()
        if token.kind is not _Kind.WORD:
            raise self.unexpected(token, "a label value, ',' or end of string")
        return self.value(token)

    def value_list(self) -> tuple[str, ...]:
        """list := "(" VALUE? ("," VALUE?)+ ")" | "(" VALUE ")" — a missing item between commas is the empty
        value; an empty list `()` is refused, as Kubernetes refuses an empty set for `in` and `notin`."""
        token = self.take()
        if token.text != "(":
            raise self.unexpected(token, "'('")
        if self.peek().text == ")" and self.empty_list_is_empty_value:
            self.take()
            return ("",)
        if self.peek().text == ")":
            raise self.error(
                self.peek(),
                "an empty list: 'in' and 'notin' need at least one value ('key=' selects the empty one)",
            )
        values: list[str] = []
        expecting_value = True
        while True:
            token = self.take()
            if token.kind is _Kind.WORD and expecting_value:
                values.append(self.value(token))
                expecting_value = False
            elif token.text in (",", ")"):
                if expecting_value:
                    values.append("")
                if token.text == ")":
                    return tuple(values)
                expecting_value = True
            else:
                raise self.unexpected(token, "a label value, ',' or ')'" if expecting_value else "',' or ')'")

    def key(self, token: _Token) -> str:
        if (error := label_key_error(token.text)) is not None:
            raise self.error(token, f"invalid label key '{token.text}': {error}")
        return token.text

    def value(self, token: _Token) -> str:
        if (error := label_value_error(token.text)) is not None:
            raise self.error(token, f"invalid label value '{token.text}': {error}")
        return token.text
