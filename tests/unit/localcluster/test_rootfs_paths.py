"""Mount targets inside an image resolve its symbolic links inside the image, never on the node."""

from __future__ import annotations

from hack.localcluster.nodeagent.rootfs import in_root


def test_links_resolve_inside_the_root(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to("/run")  # Debian's absolute link
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "conf").symlink_to("../opt/conf")  # a relative one
    assert in_root(tmp_path, "/var/run/secrets/token") == "./run/secrets/token"
    assert in_root(tmp_path, "/etc/conf/x") == "./opt/conf/x"
    assert in_root(tmp_path, "/../../etc/hosts") == "./etc/hosts"
    assert in_root(tmp_path, "/tmp") == "./tmp"


def test_a_link_loop_ends(tmp_path):
    (tmp_path / "a").symlink_to("/b")
    (tmp_path / "b").symlink_to("/a")
    assert in_root(tmp_path, "/a/x").endswith("/x")
