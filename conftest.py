"""Root pytest configuration: run documentation fences with the site build's semantics.

The fences of ``docs/`` run page by page in worker processes while the unit tests run (see
``kexue/_pytest_docs.py``; one page alone, ``--pdb`` or ``KEXUE_FENCE_WORKERS=1`` run them in
this process), and their outputs are recorded in a per-session directory
(``$KEXUE_FENCE_RECORD``); the strict build of the test session (``tests/conftest.py``, fixture
``built_site``) reads them instead of running the page code a second time.
"""

from __future__ import annotations

import os
import shutil
import tempfile

pytest_plugins = ["kexue._pytest_docs"]


def pytest_configure(config) -> None:
    from kexue._pytest_docs import RECORD_ENV  # after the plugin is registered (assertion rewriting)

    if not os.environ.get(RECORD_ENV):
        directory = tempfile.mkdtemp(prefix="kexue-fences-")
        os.environ[RECORD_ENV] = directory
        config._kexue_record_dir = directory  # removed again in pytest_unconfigure


def pytest_unconfigure(config) -> None:
    directory = getattr(config, "_kexue_record_dir", None)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.environ.pop("KEXUE_FENCE_RECORD", None)
