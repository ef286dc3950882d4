"""`percept.core.cpu` (glibc's malloc thresholds for whole-image networks) and what keeps a decode's start
short: registering the codecs must not import compressai."""

from __future__ import annotations

import subprocess
import sys

import pytest

from percept.cli import main
from percept.core import cpu

glibc = pytest.mark.skipif(cpu._libc() is None, reason="needs Linux with glibc")


@glibc
def test_reuse_freed_memory_sets_and_resets_the_thresholds(monkeypatch):
    monkeypatch.delenv(cpu.ENV, raising=False)
    calls = []
    libc = cpu._libc()
    real = libc.mallopt

    class Spy:
        def __getattr__(self, name):
            return getattr(libc, name)

        def mallopt(self, param, value):
            calls.append((param, value))
            return real(param, value)

    monkeypatch.setattr(cpu, "_libc", lambda: Spy())
    try:
        assert cpu.reuse_freed_memory() is True
        assert calls == [(cpu._M_MMAP_THRESHOLD, cpu._LARGE), (cpu._M_TRIM_THRESHOLD, cpu._LARGE)]
        calls.clear()
        assert cpu.reuse_freed_memory(False) is True
        assert calls == [
            (cpu._M_MMAP_THRESHOLD, cpu._GLIBC_DEFAULT),
            (cpu._M_TRIM_THRESHOLD, cpu._GLIBC_DEFAULT),
        ]
    finally:
        cpu.reuse_freed_memory()


def test_environment_opt_out_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv(cpu.ENV, "system")
    monkeypatch.setattr(cpu, "_libc", lambda: pytest.fail("libc must not be touched"))
    assert cpu.reuse_freed_memory() is False


def test_off_glibc_it_does_nothing(monkeypatch):
    monkeypatch.delenv(cpu.ENV, raising=False)
    monkeypatch.setattr(cpu, "_libc", lambda: None)
    assert cpu.reuse_freed_memory() is False


def test_the_commands_turn_it_on(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(cpu, "reuse_freed_memory", lambda enable=True: seen.append(enable))
    assert main(["codecs"]) == 0
    assert seen == [True]


def test_registering_codecs_does_not_import_compressai():
    """compressai takes seconds to import (it pulls in scipy and torch's compiler stack); a JPEG
    decode lists the codecs to check the file's codec id and must not pay for it."""
    code = (
        "import sys\n"
        "from percept.codecs import codec_names\n"
        "assert 'percept-hyperprior' in codec_names()\n"
        "print(sorted(m for m in ('compressai', 'scipy') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
