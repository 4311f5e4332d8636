"""The engine and the file readers stand alone: no Django, and BLAS limited only per thread."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_engine_and_readers_import_without_django():
    code = (
        "import sys; import leaderboard.engine, leaderboard.engine.naive, leaderboard.battle_files; "
        "loaded = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"Django modules loaded by the engine: {done.stdout} {done.stderr}"


def test_single_threaded_blas_sets_this_thread_and_restores():
    from leaderboard.engine.blas import _thread_local_setters, single_threaded_blas

    def current(setter) -> int:
        value = setter(0)  # the setter returns the previous per-thread value; put it straight back
        setter(value)
        return value

    setters = _thread_local_setters()
    before = [current(setter) for setter in setters]
    with single_threaded_blas():
        assert [current(setter) for setter in setters] == [1] * len(setters)
        with single_threaded_blas():
            pass
        assert [current(setter) for setter in setters] == [1] * len(setters)
    assert [current(setter) for setter in setters] == before
