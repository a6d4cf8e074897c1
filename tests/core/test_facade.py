"""The ``airrep_core`` facade: its names resolve, and importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import airrep_core


def test_facade_names_resolve_to_the_core_objects():
    for name in airrep_core.__all__:
        obj = getattr(airrep_core, name)
        assert obj.__name__ == name
        assert obj.__module__.startswith("airrep_core.")


def test_importing_the_package_and_the_configs_loads_no_torch():
    code = (
        "import sys, airrep_core, airrep_core.config.pipeline\n"
        "print(','.join(sorted({'torch', 'transformers'} & set(sys.modules))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
