"""`deploy/` is what `python -m rrm.install.generate` writes from `rrm.install`: the one definition of the
install objects. A hand edit under deploy/ (or a builder changed without regenerating) fails here."""

from __future__ import annotations

import shutil
from pathlib import Path

from rrm.install.generate import differences, main

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_deploy_is_what_the_generator_writes() -> None:
    assert differences(DEPLOY) == [], "run `python -m rrm.install.generate` and commit deploy/"


def test_the_check_names_edited_missing_and_stale_files_and_writing_puts_them_right(tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, deploy)
    edited = deploy / "agent" / "deployment.yaml"
    edited.write_text(edited.read_text().replace("periodSeconds: 5", "periodSeconds: 6"))
    (deploy / "control-plane" / "service.yaml").unlink()
    (deploy / "charts" / "rrm-agent" / "templates" / "extra.yaml").write_text("kind: ConfigMap\n")
    assert differences(deploy) == [
        "agent/deployment.yaml",
        "control-plane/service.yaml",
        "charts/rrm-agent/templates/extra.yaml",
    ]
    assert main([str(deploy), "--check"]) == 1
    assert main([str(deploy)]) == 0
    assert main([str(deploy), "--check"]) == 0
    assert not (deploy / "charts" / "rrm-agent" / "templates" / "extra.yaml").exists()
