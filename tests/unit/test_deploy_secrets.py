"""idle-accel secrets init: random password files, made once, readable by the services."""

from __future__ import annotations

import stat

from worker import deploy_secrets


def test_init_makes_each_password_once_and_keeps_what_exists(tmp_path):
    folder = tmp_path / "secrets"
    assert deploy_secrets.init(folder) == dict.fromkeys(deploy_secrets.PASSWORDS, "made")
    texts = {name: (folder / name).read_text() for name in deploy_secrets.PASSWORDS}
    assert len(set(texts.values())) == len(texts)  # each its own
    assert all(len(text.strip()) >= 40 for text in texts.values())  # 32 random bytes
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # the owner's only, on the host
    for name in deploy_secrets.PASSWORDS:  # compose mounts them as they are: 0644
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644

    (folder / "flower_password").write_text("")  # an empty file is made anew
    again = deploy_secrets.init(folder)
    assert again["flower_password"] == "made"
    assert {name: what for name, what in again.items() if name != "flower_password"} == \
        dict.fromkeys(set(deploy_secrets.PASSWORDS) - {"flower_password"}, "kept")
    assert all((folder / name).read_text() == texts[name]
               for name in deploy_secrets.PASSWORDS if name != "flower_password")
    assert not (folder / deploy_secrets.VOLUNTEER_URL).exists()  # written after enrolling
