"""envs.storage: writes that are whole or absent, and headers that say what a document is."""

import json
from pathlib import Path

import pytest

from envs import storage
from envs.storage import FileFormat, require_plain_name, write_file, write_folder

NOTES = FileFormat("spiral-notes", 2, "spiral notes file")


class Interrupted(Exception):
    pass


def fail_halfway(path: Path) -> None:
    """A writer that dies after writing part of its output."""
    (path / "half" if path.is_dir() else path).write_text("half")
    raise Interrupted


def test_a_file_is_replaced_whole(tmp_path):
    target = tmp_path / "deep" / "notes.json"
    write_file(target, lambda staging: staging.write_text("old"))
    suffixes = []
    write_file(target, lambda staging: (suffixes.append(staging.suffix), staging.write_text("new")))
    assert target.read_text() == "new" and suffixes == [".json"]  # the suffix, for writers that go by it
    assert [path.name for path in target.parent.iterdir()] == ["notes.json"]


def test_a_failed_file_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    target = tmp_path / "notes.json"
    target.write_text("old")
    with pytest.raises(Interrupted):
        write_file(target, fail_halfway)
    assert target.read_text() == "old" and [path.name for path in tmp_path.iterdir()] == ["notes.json"]
    with pytest.raises(Interrupted):
        write_file(tmp_path / "new.json", fail_halfway)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.json"]


def fill(text: str):
    return lambda staging: (staging / "file").write_text(text)


@pytest.mark.parametrize("exchange", [True, False], ids=["swapped in one step", "renamed in two"])
def test_a_folder_is_replaced_whole(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(storage, "_exchange", lambda a, b: False)  # a system without renameat2
    folder = tmp_path / "agent"
    write_folder(folder, fill("old"))
    (folder / "stale").write_text("only in the old folder")
    write_folder(folder, fill("new"))
    assert sorted(path.name for path in folder.iterdir()) == ["file"] and (folder / "file").read_text() == "new"
    assert [path.name for path in tmp_path.iterdir()] == ["agent"]  # no staging or retired folder left


def test_a_failed_folder_write_leaves_the_old_folder_and_no_partial_one(tmp_path):
    folder = tmp_path / "best"
    write_folder(folder, fill("old"))
    with pytest.raises(Interrupted):
        write_folder(folder, fail_halfway)
    assert (folder / "file").read_text() == "old" and [path.name for path in tmp_path.iterdir()] == ["best"]
    with pytest.raises(Interrupted):
        write_folder(tmp_path / "fresh", fail_halfway)
    assert [path.name for path in tmp_path.iterdir()] == ["best"]


def test_folders_swap_in_one_step_where_the_system_allows(tmp_path):
    if storage._renameat2() is None:
        pytest.skip("no renameat2 on this system: folders are renamed in two steps")
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "name").write_text(folder.name)
    assert storage._exchange(a, b)
    assert (a / "name").read_text() == "b" and (b / "name").read_text() == "a"


def test_a_header_is_stamped_and_checked_off():
    document = NOTES.stamp({"text": "hello"})
    assert document == {"format": "spiral-notes", "version": 2, "text": "hello"}
    assert NOTES.parse(json.dumps(document), "notes.json") == {"text": "hello"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "Not a spiral notes file: notes.json is not valid JSON"),
        ("[1, 2]", "Not a spiral notes file: notes.json holds a JSON list, not an object with format 'spiral-notes'"),
        ('{"version": 2}', "Not a spiral notes file: notes.json has format None, 'spiral-notes' expected"),
        ('{"format": "spiral-agent", "version": 2}', "notes.json has format 'spiral-agent', 'spiral-notes' expected"),
        ('{"format": "spiral-notes", "version": 3}',
         "Unsupported spiral notes file version 3 in notes.json: this spiral reads version 2"),
        ('{"format": "spiral-notes"}', "Unsupported spiral notes file version None"),
    ],
)
def test_foreign_or_newer_documents_are_refused_naming_the_source(text, message):
    with pytest.raises(ValueError, match=message):
        NOTES.parse(text, "notes.json")


def test_a_file_that_is_not_text_is_refused(tmp_path):
    path = tmp_path / "notes.json"
    path.write_bytes(b"\x89PNG\xff")
    with pytest.raises(ValueError, match="notes.json is not UTF-8 text"):
        NOTES.read(path)


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/abs"])
def test_a_name_with_a_path_in_it_is_refused(name):
    with pytest.raises(ValueError, match=r"A run's name must be a plain name .*" + repr(name).replace(".", r"\.")):
        require_plain_name(name, "A run's name")


def test_a_plain_name_is_returned_as_it_is():
    assert require_plain_name("painting-3.v2", "The files' name") == "painting-3.v2"
