r"""MkDocs hook: search results that read as text.

Material's search plugin indexes each page before the math is typeset (``docs/_hooks/katex_ssr.py``
renders it later, in ``on_post_page``), so the index holds the TeX source of every formula,
``\(64 \to 256 \to 10\)``, and a result preview shows it raw. After the search plugin has
written ``search/search_index.json`` (and before the offline plugin inlines it), each title and
text is rewritten:

* inline and display formulas lose their delimiters and read as plain text: common commands
  become their Unicode symbols (``\theta`` -> θ, ``\to`` -> →, ``\le`` -> ≤), ``\frac{a}{b}``
  becomes ``a/b``, spacing and sizing commands and braces go;
* Sphinx roles that a docstring may still contain (``:func:`name```, rendered as
  ``:func:<code>name</code>``) lose the role.

So a result preview shows ``64 → 256 → 10``. Greek letters stay unsearchable, though: with more
than one language, Material's search builds one word trimmer for all of them, which keeps only
Latin letters, digits, ``_`` and CJK characters, so ``θ`` is stripped from the index and from a
query alike (``β进制`` is still found, through its Chinese part).
Queries with Latin and Chinese characters side by side (``RoPE外推``) are split at the script
boundary by the ``separator`` of the search plugin in ``mkdocs.yml``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mkdocs.plugins import event_priority

SYMBOLS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε", "zeta": "ζ",
    "eta": "η", "theta": "θ", "vartheta": "θ", "iota": "ι", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν",
    "xi": "ξ", "pi": "π", "rho": "ρ", "sigma": "σ", "tau": "τ", "upsilon": "υ", "phi": "φ", "varphi": "φ",
    "chi": "χ", "psi": "ψ", "omega": "ω", "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ", "Xi": "Ξ",
    "Pi": "Π", "Sigma": "Σ", "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω",
    "to": "→", "rightarrow": "→", "leftarrow": "←", "mapsto": "↦", "Rightarrow": "⇒", "iff": "⇔",
    "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥", "ne": "≠", "neq": "≠", "approx": "≈", "sim": "~",
    "equiv": "≡", "propto": "∝", "ll": "≪", "gg": "≫", "times": "×", "cdot": "·", "circ": "∘", "otimes": "⊗",
    "pm": "±", "mp": "∓", "infty": "∞", "partial": "∂", "nabla": "∇", "sum": "Σ", "prod": "Π", "int": "∫",
    "in": "∈", "notin": "∉", "subset": "⊂", "subseteq": "⊆", "cup": "∪", "cap": "∩", "forall": "∀",
    "exists": "∃", "ldots": "…", "cdots": "⋯", "dots": "…", "top": "ᵀ", "sqrt": "√", "langle": "⟨",
    "rangle": "⟩", "lfloor": "⌊", "rfloor": "⌋", "lceil": "⌈", "rceil": "⌉", "|": "‖", "{": "{", "}": "}",
    "%": "%", "#": "#", "&": "&", "_": "_",
}
# Commands that only size or space things, or wrap one argument that should stay as it is.
_DROP = re.compile(
    r"\\(?:left|right|big|Big|bigg|Bigg|bigl|bigr|Bigl|Bigr|displaystyle|textstyle|limits|nolimits|"
    r"quad|qquad|,|;|!|:| )(?![A-Za-z])"
)
_WRAP = re.compile(r"\\(?:mathrm|mathbf|mathit|mathsf|mathtt|mathcal|mathbb|boldsymbol|bm|text|textrm|textbf|"
                   r"operatorname\*?|hat|bar|tilde|vec|widehat|widetilde|overline|underline)\s*")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_COMMAND = re.compile(r"\\([A-Za-z]+|[|{}%#&_])")
_MATH = re.compile(r"\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|data|attr|mod|exc|obj|const):(?=<code>|`)")


def tex_to_text(tex: str) -> str:
    """A formula's TeX as readable plain text (an approximation for search previews)."""
    text = _DROP.sub(" ", tex)
    def frac(m: re.Match) -> str:
        a, b = (x.strip() for x in (m[1], m[2]))
        return "/".join(x if re.fullmatch(r"[\w^.]*", x) else f"({x})" for x in (a, b))

    for _ in range(3):  # nested fractions, innermost first
        text = _FRAC.sub(frac, text)
    text = _WRAP.sub("", text)
    text = _COMMAND.sub(lambda m: SYMBOLS.get(m[1], m[1]), text)
    text = text.replace("{", "").replace("}", "").replace("&amp;", "").replace("\\\\", " ")
    return " ".join(text.split())


def clean(text: str) -> str:
    """An index entry's text with its formulas as plain text and its Sphinx roles dropped."""
    text = _MATH.sub(lambda m: tex_to_text(m[1] if m[1] is not None else m[2]), text)
    return _ROLE.sub("", text)


@event_priority(-50)  # after the search plugin wrote the index (0), before the offline plugin reads it (-100)
def on_post_build(config) -> None:
    path = Path(config.site_dir) / "search" / "search_index.json"
    if not path.is_file():
        return
    index = json.loads(path.read_text(encoding="utf-8"))
    for doc in index.get("docs", []):
        for field in ("title", "text"):
            if isinstance(doc.get(field), str):
                doc[field] = clean(doc[field])
    path.write_text(json.dumps(index, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
