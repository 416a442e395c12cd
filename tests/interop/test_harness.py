"""The harness itself: a missing peer skips its tests, but fails them under CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import require


def test_an_installed_peer_is_required_silently(tmp_path: Path) -> None:
    stamp = tmp_path / ".installed"
    stamp.touch()
    require(stamp, "a peer")


def test_a_missing_peer_fails_under_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="a peer is not installed"):
        require(tmp_path / ".installed", "a peer")


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_a_missing_peer_skips_outside_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=r"tests/interop/setup\.sh"):
        require(tmp_path / ".installed", "a peer")
