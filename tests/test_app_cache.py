"""The identity of an image file in explanation cache keys."""

from __future__ import annotations

import os

from lrp_desktop.cache import image_identity


def test_a_rewritten_image_gets_a_new_identity_and_a_gone_one_zeros(tmp_path):
    path = tmp_path / "cat.png"
    path.write_bytes(b"first")
    first = image_identity(path)
    assert first[0] == str(path) and first[1] == os.stat(path).st_ino and first[2] == 5
    path.write_bytes(b"second picture")
    assert image_identity(path) != first
    path.unlink()
    assert image_identity(path) == (str(path), 0, 0, 0)


def test_two_files_reached_through_one_link_name_are_told_apart(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"same")
    (tmp_path / "b" / "x.png").write_bytes(b"same")
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "a")
    monkeypatch.chdir(tmp_path)
    before = image_identity("current/x.png")
    assert before[0] == str(link / "x.png")  # relative paths are made absolute
    link.unlink()
    link.symlink_to(tmp_path / "b")
    after = image_identity("current/x.png")
    assert after[0] == before[0] and after[2] == before[2]
    assert after != before  # the inode tells the two files apart
