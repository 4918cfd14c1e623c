"""`eventsvm keys rotate`: a token issued before a rotation still validates after it (its key is
now a secondary one) and stops validating once rotations have pruned its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventsvm.app.cli import main
from eventsvm.identity.keys import ensure_keys
from eventsvm.identity.tokens import TokenInvalid, TokenService


def test_rotation_keeps_recent_tokens_and_prunes_old_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_dir = tmp_path / "fernet-keys"
    ensure_keys(key_dir)
    tokens = TokenService(key_dir)
    before = tokens.issue("user-1", "project-1", ["member"])
    assert main(["keys", "rotate", "--data-dir", str(tmp_path)]) == 0
    assert "primary key 2" in capsys.readouterr().out
    assert TokenService(key_dir).validate(before.token).user_id == "user-1"
    for _ in range(3):
        assert main(["keys", "rotate", "--data-dir", str(tmp_path)]) == 0
    with pytest.raises(TokenInvalid):
        TokenService(key_dir).validate(before.token)
    after = TokenService(key_dir).issue("user-1", "project-1", ["member"])
    assert TokenService(key_dir).validate(after.token).project_id == "project-1"


def test_too_few_keys_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "rotate", "--data-dir", str(tmp_path), "--max-active-keys", "1"]) == 2
    assert "--max-active-keys" in capsys.readouterr().err
