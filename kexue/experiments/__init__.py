"""What the pages need to reproduce the articles at CPU scale, kept apart from the articles' math.

``kexue/<topic>.py`` holds what an article defines: its equations, layers, models and estimators.
``kexue/experiments/<topic>.py`` holds what only our page needs to test it on a CPU in seconds:
synthetic data, stand-in models, training and evaluation loops. Two modules serve every page:

* [`kexue.experiments.training`][kexue.experiments.training]: a seeded MLP builder, seeded
  minibatches and one fit loop that takes a loss callback (named losses in a registry);
* [`kexue.experiments.claims`][kexue.experiments.claims]: the rules that turn measured numbers
  into a verdict with a reason, and the *claims vs reproduction* table every page ends with.

Nothing here is imported by ``kexue/<topic>.py``.
"""

from __future__ import annotations

__all__: list[str] = []
