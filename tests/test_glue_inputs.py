"""GLUE test files as the loader takes them: a test example's index names its row of the leaderboard's
submission file, so an index that is not a whole number, or one given twice, is refused naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from effbert.data.glue import load_split
from effbert.errors import InputError


def _write_test(glue_dir: Path, folder: str, text: str, name: str = "test.tsv") -> Path:
    path = glue_dir / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_an_official_test_file_gives_its_indices_in_order(tmp_path):
    _write_test(tmp_path, "SST-2", "index\tsentence\n0\ta fine film .\n1\ta dull film .\n10\tfine .\n")
    assert load_split(tmp_path, "SST-2", "test").ids == ["0", "1", "10"]


@pytest.mark.parametrize(("rows", "line", "says"), [
    (["0\ta", "abc\tb"], 3, r"index 'abc' is not a whole number; expected the test example's index"),
    (["0\ta", "1.5\tb"], 3, r"index '1\.5' is not a whole number"),
    (["0\ta", "-1\tb"], 3, r"index '-1' is not a whole number"),
    (["0\ta", "\tb"], 3, r"index '' is not a whole number"),
    (["0\ta", "1\tb", "0\tc"], 4, r"index 0 repeats line 2's; expected each test example's index once"),
    (["7\ta", "07\tb"], 3, r"index 07 repeats line 2's"),
])
def test_a_bad_or_repeated_test_index_names_file_and_line(tmp_path, rows, line, says):
    path = _write_test(tmp_path, "SST-2", "index\tsentence\n" + "".join(f"{row}\n" for row in rows))
    with pytest.raises(InputError, match=rf"SST-2/test\.tsv: line {line}: {says}") as found:
        load_split(tmp_path, "SST-2", "test")
    assert str(found.value).startswith(f"{path}: ") and "\n" not in str(found.value)


def test_every_test_split_checks_its_index_column(tmp_path):
    """MNLI's two test sets and the diagnostic set (AX) are written to the leaderboard too."""
    _write_test(tmp_path, "MNLI", "index\tsentence1\tsentence2\n0\ta\tb\n0\tc\td\n", "test_mismatched.tsv")
    with pytest.raises(InputError, match=r"MNLI/test_mismatched\.tsv: line 3: index 0 repeats line 2's"):
        load_split(tmp_path, "MNLI", "test_mismatched")
    _write_test(tmp_path, "diagnostic", "index\tsentence1\tsentence2\nx\ta\tb\n", "diagnostic.tsv")
    with pytest.raises(InputError, match=r"diagnostic/diagnostic\.tsv: line 2: index 'x' is not a whole number"):
        load_split(tmp_path, "AX", "test")


def test_labelled_splits_keep_their_ids_as_they_are(tmp_path):
    """Only test files are predicted into the submission: a train or dev file's id column is not checked."""
    _write_test(tmp_path, "RTE", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n0\tc\td\tentailment\n",
                "dev.tsv")
    assert load_split(tmp_path, "RTE", "dev").ids == ["0", "0"]
