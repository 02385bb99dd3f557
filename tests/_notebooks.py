"""Run a notebook in a fresh Jupyter kernel and reap that kernel's process afterwards.

nbclient shuts the kernel down when the notebook ends, but jupyter_client can drop its
``subprocess.Popen`` before the process has been waited on (when the kernel is slow to exit on a
loaded machine, its kill path gives up waiting after a timeout and cleans up anyway). The
``Popen`` then warns "subprocess ... is still running" (a ``ResourceWarning``) whenever the
garbage collector happens to reach it, which pytest reports as a failure of whatever test is
running at that moment: it did so once in twelve clean-clone runs, in a robustness test of
``kexue.vqvae``. So every kernel process started here is recorded at launch and waited for
(killed after a grace period) before this function returns.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from unittest import mock

import nbformat
from jupyter_client.provisioning import local_provisioner
from nbclient import NotebookClient

GRACE = 30.0  # seconds a kernel may take to exit after nbclient's shutdown before it is killed


def execute(nb: nbformat.NotebookNode, kernel_name: str, cwd: Path, timeout: int) -> nbformat.NotebookNode:
    """Execute ``nb`` in place in a new ``kernel_name`` kernel started in ``cwd``; return it."""
    started: list[subprocess.Popen] = []
    launch = local_provisioner.launch_kernel

    def recording_launch(*args, **kwargs):
        proc = launch(*args, **kwargs)
        started.append(proc)
        return proc

    try:
        with mock.patch.object(local_provisioner, "launch_kernel", recording_launch):
            NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                           resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        for proc in started:
            try:
                proc.wait(timeout=GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return nb
