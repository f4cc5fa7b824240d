"""Griffe extension: render the reStructuredText bits of redismpx's docstrings as Markdown.

The docstrings are written for humans and for ``help()``: they use Sphinx roles
(``:class:`~redismpx.Multiplexer```) and literal blocks introduced by ``::``. mkdocstrings
renders docstrings as Markdown, where both would show up verbatim. This extension rewrites them
before the docstrings are parsed:

* a role becomes an *optional* cross-reference (``<autoref ... optional>``): a link when the
  target is documented on the site, plain code otherwise (standard-library names, private
  modules), never a build warning;
* a paragraph ending in ``::`` followed by an indented block becomes a fenced Python block.

Names are resolved in the docstring's own scope (``SubscriptionClosed`` in ``multiplexer.py``
is ``redismpx.errors.SubscriptionClosed``), as Sphinx would.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(
    r":(?:py:)?(?P<role>class|meth|func|mod|data|attr|exc|obj|const|term):"
    r"`(?P<tilde>~?)(?P<target>[^`<>]+?)`"
)

# Targets that are documented as prose pages rather than as API objects: an explicit anchor
# with this id exists in the page (``[](){#redismpx._buffer}``).
PAGE_ANCHORS = {"redismpx._buffer"}


def _resolve(obj: griffe.Object, target: str) -> str:
    if target in PAGE_ANCHORS:
        return target
    head, _, rest = target.partition(".")
    try:
        path = obj.resolve(head)
    except (griffe.NameResolutionError, griffe.AliasResolutionError, KeyError):
        path = _inherited(obj, head)
        if path is None:
            return target  # a dotted path already (redismpx.x.Y), or the standard library
    return f"{path}.{rest}" if rest else path


def _inherited(obj: griffe.Object, name: str) -> str | None:
    """``name`` as a member that the enclosing class inherits (``resolve`` sees only its own)."""
    scope: Any = obj
    while scope is not None and not scope.is_module:
        if scope.is_class:
            try:
                member = scope.all_members.get(name)
            except griffe.AliasResolutionError:
                member = None
            if member is not None:
                return member.target_path if member.is_alias else member.path
        scope = scope.parent
    return None


def _roles(obj: griffe.Object, text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        target = match["target"].strip()
        shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
        if match["role"] in ("meth", "func"):
            shown += "()"
        identifier = _resolve(obj, target)
        return f'<autoref identifier="{identifier}" optional>`{shown}`</autoref>'

    return ROLE.sub(replace, text)


def _literal_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::") and i + 1 < len(lines) and not lines[i + 1].strip():
            # Collect the indented block after the blank line(s).
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            block: list[str] = []
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith((" ", "\t"))):
                block.append(lines[j])
                j += 1
            while block and not block[-1].strip():
                block.pop()
            if block:
                head = line.rstrip()[:-1]  # "that::" -> "that:", a lone "::" -> ":"
                if head.strip() not in ("", ":"):
                    out.append(head)
                    out.append("")
                out.append("```python")
                out.extend(textwrap.dedent("\n".join(block)).split("\n"))
                out.append("```")
                out.append("")
                i = j
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RstMarkup(griffe.Extension):
    """Rewrite Sphinx roles and ``::`` literal blocks in every docstring of the package."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        value = docstring.value
        if "::" in value or ":`" in value:
            docstring.value = _roles(obj, _literal_blocks(value))
