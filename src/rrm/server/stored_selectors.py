"""Stored selectors that only an older rrm accepted (an empty list, `env in ()`).

They keep the meaning they had when they were stored (`rrm.core.selectors.parse_stored_selector`), so the
server starts and places everything as before; at start each one is logged, naming its object, so that an
operator applies it again in today's syntax.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from rrm.core.resources import selector_of
from rrm.core.rollouts import policy_from_spec
from rrm.core.selectors import needs_rewrite, parse_stored_selector
from rrm.store import Database
from rrm.store import compass as compass_store
from rrm.store import repositories as repo
from rrm.store import rollouts as rollout_repo

log = logging.getLogger(__name__)


def selectors_to_rewrite(session: Session) -> list[tuple[str, str]]:
    """(object, selector) of each stored selector that today's syntax refuses."""
    found = [(f"component/{row.name}", selector_of(row.manifest)) for row in repo.all_components(session)]
    for row in rollout_repo.all_policies(session):
        found += [
            (f"rolloutpolicy/{row.name} group {group.name}", group.selector)
            for group in policy_from_spec(row.name, row.spec).groups
        ]
    found += [
        (f"scenario/{name}", selector) for name, selector in compass_store.all_assignments(session).items()
    ]
    return [
        (subject, selector) for subject, selector in found if selector is not None and needs_rewrite(selector)
    ]


def warn_about_stored_selectors(db: Database) -> list[tuple[str, str]]:
    with db.read() as session:
        found = selectors_to_rewrite(session)
    for subject, selector in found:
        log.warning(
            "%s: the stored selector %r has an empty list, which rrm no longer accepts; it keeps the meaning"
            " it had when it was stored, %r (the empty value): apply it again in that form",
            subject,
            selector,
            str(parse_stored_selector(selector)),
        )
    return found
