"""C struct members, read from source text, for tests that compare Python's names with C's.

(krsid's own code never needs a struct's member list: the loader's write_leaf checks
each name against the compiled map's leaf type, which is the C struct itself.)
"""

from __future__ import annotations

import re

from krsid.csource import IDENT, strip_comments


def struct_members(text: str, struct: str) -> tuple[str, ...]:
    """``struct <struct>``'s member names in order (one flat struct: no nested braces)."""
    m = re.search(rf"\bstruct\s+{struct}\s*\{{([^}}]*)\}}", strip_comments(text))
    assert m, f"no definition of struct {struct}"
    names = re.findall(rf"({IDENT})\s*(?:\[[^\]]*\])?\s*;", m.group(1))
    assert names, f"struct {struct} has no members"
    return tuple(names)
