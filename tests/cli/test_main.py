"""The console script's entry point (`verisolve`, `python -m verisolve`), run as users run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from verisolve.settings import SettingsError, get_settings


def test_a_bad_setting_is_one_line_naming_each_variable(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "VERISOLVE_DATA_DIR": str(tmp_path),
        "VERISOLVE_PROVIDER": "gpu",
        "VERISOLVE_BATCH_ROWS": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "verisolve", "models", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: invalid settings: VERISOLVE_PROVIDER='gpu': ")
    assert "VERISOLVE_BATCH_ROWS='0': Input should be greater than 0" in done.stderr
    assert not done.stdout
    assert not any(tmp_path.iterdir())  # nothing written before the settings were read


def test_get_settings_raises_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERISOLVE_METRICS_PORT", "70000")
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError, match=r"VERISOLVE_METRICS_PORT='70000': .*65535"):
            get_settings()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
