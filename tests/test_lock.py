"""The dependency lock (requirements.lock, requirements-bench.lock; scripts/lockfile.py).

`make demo` / `make test` install exactly the lock's pins, so a requirement that pyproject.toml names but
the lock lacks would be missing on a fresh machine, and a hand-edited lock must stop the install."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lockfile", REPO / "scripts" / "lockfile.py")
lockfile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lockfile)


def test_every_pyproject_requirement_is_locked():
    assert lockfile.missing_from_locks() == [], "run `make lock` after changing pyproject.toml"


def test_a_requirement_missing_from_the_lock_is_found(tmp_path, monkeypatch):
    lock = tmp_path / "requirements.lock"
    lock.write_text("".join(line + "\n" for line in (REPO / "requirements.lock").read_text().splitlines()
                            if not line.startswith("safetensors==")))
    monkeypatch.setattr(lockfile, "LOCK", lock)
    assert lockfile.missing_from_locks() == ["safetensors (dependencies)"]


def test_the_main_lock_pins_a_cpu_torch_and_no_cuda_package():
    pins = lockfile.read_lock(REPO / "requirements.lock")
    assert "torch" in pins
    assert [name for name in pins if lockfile.CUDA_ONLY.match(name)] == []


def test_the_bench_lock_does_not_move_a_main_pin():
    main, bench = (lockfile.read_lock(REPO / name) for name in ("requirements.lock", "requirements-bench.lock"))
    assert set(main) & set(bench) == set()


@pytest.mark.parametrize("line", ["torch>=2.4", "numpy", "peft==0.21.2 ; garbage", "==1.0"])
def test_a_hand_edited_line_is_refused_with_its_line_number(tmp_path, line):
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# header\nsafetensors==0.8.0\n{line}\n")
    with pytest.raises(ValueError, match=r"requirements.lock:3: .* regenerate the lock with `make lock`"):
        lockfile.read_lock(lock)


def test_check_reports_every_difference_from_the_lock(tmp_path):
    """The post-install check: a pin at another version, one not installed, and a package nobody locked."""
    installed = lockfile.installed()
    pytest_version = installed["pytest"]
    lock = tmp_path / "requirements.lock"
    others = "".join(f"{name}=={version}\n" for name, version in installed.items()
                     if name not in ("pytest", "pip", "lorakit", "iniconfig"))
    lock.write_text(f"pytest==0.0.1\nnot-a-real-package==1.0\n{others}")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "lockfile.py"), "check", str(lock)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert f"pytest is {pytest_version}, the lock says 0.0.1" in result.stderr
    assert "not-a-real-package==1.0 is locked but not installed" in result.stderr
    assert "iniconfig==" in result.stderr and "is installed but not locked" in result.stderr
