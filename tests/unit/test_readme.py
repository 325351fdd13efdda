"""The documentation keeps up with the code: the configuration table lists every
setting, and every relative link in README.md and docs/*.md leads to a file."""

import re
from pathlib import Path

from compute.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: A Markdown link's target: ``[text](target)``, ``target`` without spaces.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
#: Fenced code blocks and inline code, where ``[a](b)`` is not a link.
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def test_every_setting_is_in_the_configuration_table():
    page = (ROOT / "docs" / "configuration.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    documented = {line.split("`")[1] for line in rows}

    assert {env_name(key) for key in Settings.model_fields} <= documented


def test_every_relative_link_in_the_documentation_leads_to_a_file():
    broken = []
    for page in PAGES:
        for target in LINK.findall(CODE.sub("", page.read_text())):
            path = target.split("#", 1)[0]
            if not path or re.match(r"[a-z][a-z0-9+.-]*:", path):  # an anchor, or a URL
                continue
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")

    assert len(PAGES) > 1
    assert not broken, broken
