"""One wire format, two clients: the Python client against the shared vectors in sdk/testdata/
(the TypeScript client's suite checks the same files; tests/sdk/test_typescript.py runs it)."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.support.sdk import redaction_output, redaction_vectors, run_vector, session_vectors

ROOT = Path(__file__).resolve().parents[2]
VECTORS = session_vectors()
REDACTION = redaction_vectors()


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_tracker_calls_produce_exactly_the_vectors_sessions(vector):
    assert run_vector(vector) == vector["sent"]


@pytest.mark.parametrize("case", REDACTION, ids=[f"{c['redactor']}: {c['input'][:40]}" for c in REDACTION])
def test_ready_redactors_give_the_vectors_output(case):
    assert redaction_output(case) == case["output"]


def test_the_vectors_cover_every_tracker_call_and_option():
    """A vector file that stopped exercising a call would let the clients drift unseen."""
    calls = {step["call"] for v in VECTORS for step in v["steps"]}
    assert calls == {"startSession", "startTurn", "recordLLMCall", "recordAgentResponse", "recordUserFeedback",
                     "completeSession", "abandonExpired"}
    options = {key for v in VECTORS for key in v.get("options", {})}
    assert options == {"sessionTimeoutMs", "maxOpenSessions", "redact"}
    assert {c["redactor"] for c in REDACTION} == {"emails", "phoneNumbers", "cardNumbers", "apiKeys", "pii"}


def oldest_python() -> str | None:
    """A Python 3.9 that runs (a pyenv shim may exist without the version selected)."""
    candidates = [shutil.which("python3.9"), *map(str, sorted(Path.home().glob(".pyenv/versions/3.9*/bin/python3.9")))]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


OLDEST_PYTHON = oldest_python()


@pytest.mark.skipif(OLDEST_PYTHON is None, reason="no python3.9 on this machine")
def test_the_oldest_supported_python_passes_the_vectors_with_the_standard_library_alone():
    code = textwrap.dedent(
        """
        import sys
        sys.path = [p for p in sys.path if "site-packages" not in p] + ["sdk/python", "."]
        from tests.support.sdk import redaction_output, redaction_vectors, run_vector, session_vectors
        failed = [v["name"] for v in session_vectors() if run_vector(v) != v["sent"]]
        failed += [c["input"] for c in redaction_vectors() if redaction_output(c) != c["output"]]
        from bagula_client import BagulaClient
        BagulaClient("k", "http://127.0.0.1:9").close(timeout=0)
        print(sys.version_info[:2], failed)
        """
    )
    result = subprocess.run([OLDEST_PYTHON, "-I", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(3, 9) []"
