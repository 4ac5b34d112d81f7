"""Formulas as MathML, written into the HTML when the site is built.

Sphinx's default HTML math renderer leaves the LaTeX in the page for MathJax, a script fetched
from a CDN when the page is read, so a page read offline shows raw LaTeX. This renderer converts
each ``:math:`` role and ``.. math::`` block with latex2mathml (pure Python, in the ``docs``
extra) and writes the MathML itself, which browsers lay out natively (MathML Core: Chromium
109+, Firefox, Safari). A formula latex2mathml cannot convert is a build warning, so
``sphinx-build -W`` fails on it instead of publishing it broken.
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes
from latex2mathml.converter import convert
from sphinx.locale import _
from sphinx.util import logging
from sphinx.util.math import get_node_equation_number

logger = logging.getLogger(__name__)

# what latex2mathml writes for a command it does not know (an empty operator) or an & outside
# an environment: such a formula would render wrongly
_BROKEN = re.compile(r"<mo\s*/>|<merror|<mi>&amp;</mi>|<mi>&</mi>")
_NAME_OPERATOR = re.compile(r"<mo(?: [^>]*)?>([A-Za-z]{2,})</mo>")
_ARGUMENT_THEN_NAME = re.compile(r"(?<=</m[in]>)(<mi>[A-Za-z]{2,}</mi>)")
_NAME_THEN_ARGUMENT = re.compile(r"(<mi>[A-Za-z]{2,}</mi>)(?=<mi>|<mn>|<msub><mi>|<msup><mi>|<mi mathvariant)")


def _mathml(node: nodes.Element, latex: str, display: bool) -> str:
    latex = " ".join(latex.split())
    try:
        out = convert(latex, display="block" if display else "inline")
    except Exception as exc:  # noqa: BLE001 (latex2mathml raises its own exceptions and plain ones)
        logger.warning("cannot convert %r to MathML: %s", latex, exc, location=node)
        return f"<code>{latex}</code>"
    if _BROKEN.search(out):
        logger.warning("latex2mathml cannot convert every command of %r", latex, location=node)
    # \min, \max, \operatorname{...}: a function name, set upright as an identifier (an <mo>
    # gets an operator's spacing on both sides, "min ( x )")
    out = _NAME_OPERATOR.sub(r"<mi>\1</mi>", out)
    # and a thin space between a function name and a bare argument or factor, as TeX has:
    # "log x", "tanh s", "alpha max(...)"
    out = _NAME_THEN_ARGUMENT.sub(r'\1<mspace width="0.1667em"/>', out)
    out = _ARGUMENT_THEN_NAME.sub(r'<mspace width="0.1667em"/>\1', out)
    # the TeX source as the annotation, for copying and for screen readers that want it
    return out.replace("<math ", f'<math alttext="{_attr(latex)}" ', 1)


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def visit_math(self: Any, node: nodes.math) -> None:
    self.body.append(self.starttag(node, "span", "", CLASS="math notranslate nohighlight"))
    self.body.append(_mathml(node, node.astext(), display=False))
    self.body.append("</span>")
    raise nodes.SkipNode


def visit_math_block(self: Any, node: nodes.math_block) -> None:
    self.body.append(self.starttag(node, "div", CLASS="math notranslate nohighlight"))
    if node["number"]:
        number = get_node_equation_number(self, node)
        self.body.append(f'<span class="eqno">({number})')
        self.add_permalink_ref(node, _("Link to this equation"))
        self.body.append("</span>")
    # one equation per paragraph of the block, as Sphinx's own renderers do
    for part in (p for p in node.astext().split("\n\n") if p.strip()):
        self.body.append(_mathml(node, part, display=True))
    self.body.append("</div>\n")
    raise nodes.SkipNode


def setup(app: Any) -> dict[str, Any]:
    app.add_html_math_renderer("mathml", (visit_math, None), (visit_math_block, None))
    return {"parallel_read_safe": True, "parallel_write_safe": True}
