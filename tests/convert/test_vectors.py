"""Reading word-vector files (word2vec / GloVe / fastText text) for the word branch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convert.vectors import VectorsError, read_vectors


def write(tmp_path: Path, text: str, name: str = "v.vec") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_header_normalized_words_and_first_spelling_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "6 2\nThe 1 2\nthe 9 9\nNew_York 3 4\ncan't 5 6\n전등 7 8 \n\nlamp 0.5 -1e-1\n",
    )
    vectors = read_vectors(path, keep=(), limit=100)
    assert vectors.words == ("the", "cant", "전등", "lamp")  # "New_York" is two words
    np.testing.assert_array_equal(vectors.matrix[0], [1, 2])  # "The", not "the"
    np.testing.assert_allclose(vectors.matrix[-1], [0.5, -0.1])
    table = vectors.table()
    assert table.shape == (6, 2) and not table[:2].any()  # padding and unknown rows zero
    np.testing.assert_array_equal(table[2:], vectors.matrix)


def test_limit_keeps_the_head_of_the_file_and_every_spec_word(tmp_path: Path) -> None:
    path = write(tmp_path, "".join(f"w{i} {i} 0\n" for i in range(10)) + "light 1 1\nx 1\n")
    # After the head, only wanted words are read: the short last line is never parsed.
    assert read_vectors(path, keep=("light", "w7"), limit=3).words == (
        "w0",
        "w1",
        "w2",
        "w7",
        "light",
    )
    assert read_vectors(path, keep=(), limit=2).words == ("w0", "w1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a 1 2\nb 1 2 3\n",
            "{path}:2: the vector of 'b' is 3-dimensional, the first word's 2-dimensional",
        ),
        ("a 1 2\nb 1 x\n", "{path}:2: the vector of 'b' has a value that is not a number"),
        ("a 1 nan\n", "{path}:1: the vector of 'a' is not finite"),
        ("a 1 2\nlonely\n", "{path}:2: expected a word and its numbers"),
        ("10 300\n", "{path}: no word vectors in the file"),
    ],
)
def test_bad_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(VectorsError) as error:
        read_vectors(path, keep=("a", "b"), limit=100)
    assert str(error.value) == message.format(path=path)


def test_unreadable_files(tmp_path: Path) -> None:
    binary = tmp_path / "v.bin"
    binary.write_bytes(b"\x00\x01a 1 2\n\xff\xfe")
    with pytest.raises(VectorsError, match=r"v\.bin: not UTF-8 text \(invalid start byte at byte"):
        read_vectors(binary, keep=(), limit=10)
    with pytest.raises(VectorsError) as error:
        read_vectors(tmp_path / "missing.vec", keep=(), limit=10)
    assert str(error.value) == f"{tmp_path / 'missing.vec'}: No such file or directory"
