"""The sentence splitter against real text checked by hand (conformance: skips without ../shared/fixtures).

bench/sentence_gold_fixtures.json holds, for five enwiki articles and five RealNews records of the shared
fixtures, each text's hash and its sentence boundaries as checked by hand (not the text itself). The splitter
that builds the pretraining documents must find nearly all of them and add few of its own; the misses left
are listed in docs/benchmarks.md (a German date, "Article 113 1.", a citation after the full stop).
"""

from effbert.bench.sentences import boundaries, boundary_scores, fixture_files, fixture_sample
from effbert.data.sentences import split_sentences


def test_the_gold_was_checked_on_these_fixture_texts(shared_fixtures):
    """Every text the gold names is in the fixtures, unchanged (its hash), with boundaries inside it."""
    assert all((shared_fixtures / f).is_file() for f in fixture_files())
    sample = fixture_sample(shared_fixtures)  # raises if a text's hash differs
    assert len(sample) == 87 and sum(len(truth) for _, truth in sample) == 753
    for text, truth in sample:
        assert max(truth, default=0) < sum(not c.isspace() for c in text)


def test_the_splitter_finds_the_hand_checked_boundaries_of_real_text(shared_fixtures):
    exact, precision, recall = boundary_scores(split_sentences, fixture_sample(shared_fixtures))
    assert recall >= 0.998 and precision >= 0.99 and exact >= 83


def test_boundaries_count_non_space_characters():
    assert boundaries(["One two.", "Three  four.", "Five."]) == {7, 17}
    assert boundaries(["Alone."]) == set()
