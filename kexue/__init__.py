"""kexue: runnable, tested companions to articles of Su Jianlin's blog *Scientific Spaces* (kexue.fm).

One module per article (pure functions for the math, thin ``nn.Module``s holding
parameters), plus two shared helpers: [`kexue.data`][kexue.data] (small bundled data sets)
and [`kexue.plot`][kexue.plot] (one figure style, figures as HTML for the site).
"""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
