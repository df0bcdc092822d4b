"""Reading data files: what is not an .npz archive is named as what it is, and a CSV
file with a header row is read as columns (docs/language.md, "Data files")."""
import io
import zipfile

import numpy as np
import pytest

from himdsl.runtime.data import DataError, read_npz


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("name, content, message", [
    ("d.csv", "1.0,2\n3.5,0\n", r"it is a CSV file whose first line \(`1.0,2`\) does not name the columns"),
    ("d.txt", "my observations\n1 2 3\n", r"it is a text file \(first line `my observations`\)"),
    ("d.npz", b"", "the file is empty"),
    ("d.npz", b"\x1f\x8b\x08\x00", "it is gzip-compressed"),
    ("d.npz", bytes(range(1, 9)), "it starts with the bytes 01 02 03"),
])
def test_a_file_that_is_not_an_archive_says_what_it_is(tmp_path, name, content, message):
    with pytest.raises(DataError, match=message) as info:
        read_npz(_write(tmp_path, name, content))
    assert "allow_pickle" not in str(info.value) and "expected an .npz archive" in str(info.value)


def test_a_single_npy_array_is_not_an_archive(tmp_path):
    path = tmp_path / "d.npz"
    np.save(open(path, "wb"), np.zeros(3))
    with pytest.raises(DataError, match="a single .npy array"):
        read_npz(path)


def test_object_arrays_are_refused_not_unpickled(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array([1, None], dtype=object))
    with pytest.raises(DataError, match="array `x` holds Python objects"):
        read_npz(path)


def test_a_header_that_promises_more_than_the_archive_holds_is_corrupt(tmp_path):
    """A flipped byte in the shape must not allocate the declared size."""
    member = io.BytesIO()
    np.save(member, np.zeros(4))
    header = member.getvalue().replace(b"(4,)", b"(9,)")
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", header)
    with pytest.raises(DataError, match=r"array `x` is truncated or corrupt: its header declares shape \[9\]"):
        read_npz(path)


def test_a_member_that_is_not_an_array_is_named(tmp_path):
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(DataError, match="it holds `notes.txt`, which is not a numpy array"):
        read_npz(path)


def test_a_csv_with_a_header_is_read_as_columns(tmp_path):
    arrays = read_npz(_write(tmp_path, "d.csv", "x[0],x[1],y\n1,2.5,0\n\n3,4,1\n"))
    assert sorted(arrays) == ["x", "y"]
    np.testing.assert_array_equal(arrays["x"], [[1.0, 2.5], [3.0, 4.0]])
    assert arrays["y"].dtype == np.int64 and arrays["y"].tolist() == [0, 1]


@pytest.mark.parametrize("content, message", [
    ("x,y\n1,2\n3,b\n", r"line 3, column `y`: `b` is not a number"),
    ("x,y\n1,2\n\n3\n", r"line 4 has 1 value\(s\); the header names 2 columns"),
    ("x,x\n1,2\n", "the header names column `x` more than once"),
    ("x,x[0]\n1,2\n", r"the header has both `x` and `x\[...\]` columns"),
    ("x[0],x[2]\n1,2\n", r"columns `x\[...\]` must be numbered 0 to 1, got 0, 2"),
    ("x\n", r"its first line \(`x`\) names columns and no line of values follows"),
])
def test_csv_mistakes_name_the_line_and_column(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        read_npz(_write(tmp_path, "d.csv", content))
