"""The README's configuration table keeps up with the settings."""

from pathlib import Path

from compute.settings import Settings, env_name

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme_configuration_table():
    rows = [line for line in README.splitlines() if line.startswith("| `")]
    documented = {line.split("`")[1] for line in rows}

    assert {env_name(key) for key in Settings.model_fields} <= documented
