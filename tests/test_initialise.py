"""Starting a model from another model's weights (from_cp): tiling, fresh and unused tensors, errors."""

from __future__ import annotations

import pytest
import torch

from effbert.config import ModelConfig
from effbert.errors import InputError
from effbert.model.pretraining import PretrainingModel
from effbert.train.initialise import POSITION_KEY, initialise_from

VOCAB = 50


def _model(seed: int = 0, sop: bool = True, **overrides: object) -> PretrainingModel:
    fields = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "ffn_size": 64, "max_seq_len": 64, **overrides}
    torch.manual_seed(seed)
    return PretrainingModel(ModelConfig.model_validate(fields), VOCAB, sop=sop).eval()


def _quiet(_: str) -> None:
    pass


def test_longer_positions_tile_the_source_rows() -> None:
    source = _model(seed=1)
    target = _model(seed=2, max_seq_len=256)
    report = initialise_from(target, source.state_dict(), log=_quiet)
    assert report["positions"] == "tiled 64 -> 256"
    rows = source.state_dict()[POSITION_KEY]
    got = target.state_dict()[POSITION_KEY]
    for i in (0, 63, 64, 100, 255):
        assert torch.equal(got[i], rows[i % 64])
    assert report["fresh"] == [] and report["unused"] == []


def test_shorter_positions_keep_the_first_rows() -> None:
    source = _model(seed=1, max_seq_len=256)
    target = _model(seed=2)
    assert initialise_from(target, source.state_dict(), log=_quiet)["positions"] == "truncated 256 -> 64"
    assert torch.equal(target.state_dict()[POSITION_KEY], source.state_dict()[POSITION_KEY][:64])


def test_length_not_a_multiple_is_an_error() -> None:
    with pytest.raises(InputError, match=r"model\.max_seq_len 100 is not a multiple of the source's 64") as error:
        initialise_from(_model(max_seq_len=100), _model().state_dict(), log=_quiet)
    assert POSITION_KEY in str(error.value)


def test_same_mechanism_gives_the_source_outputs() -> None:
    source = _model(seed=1)
    target = _model(seed=2, max_seq_len=128)
    initialise_from(target, source.state_dict(), log=_quiet)
    ids = torch.randint(5, VOCAB, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 15:] = False
    types = torch.zeros_like(ids)
    with torch.no_grad():
        expected = source.encoder(ids, mask, types)
        got = target.encoder(ids, mask, types)
        assert torch.equal(got, expected)
        assert torch.equal(target.mlm(got), source.mlm(expected))


def test_missing_tensors_are_listed_as_fresh() -> None:
    source = _model(seed=1, sop=False)
    target = _model(seed=2)
    sop_before = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("sop.")}
    logged: list[str] = []
    report = initialise_from(target, source.state_dict(), log=logged.append)
    assert sorted(report["fresh"]) == sorted(sop_before)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in sop_before.items())  # left as they were
    assert any("fresh" in line and "sop.classifier.weight" in line for line in logged)


def test_tied_decoder_counts_as_loaded() -> None:
    state = {k: v for k, v in _model(seed=1).state_dict().items() if k != "mlm.word_embeddings.weight"}
    report = initialise_from(_model(seed=2), state, log=_quiet)
    assert "mlm.word_embeddings.weight" not in report["fresh"]


def test_softmax_to_nystrom_loads_all_but_the_conv() -> None:
    source = _model(seed=1)
    target = _model(seed=2, attention={"type": "nystrom", "num_landmarks": 8, "conv_kernel": 3})
    report = initialise_from(target, source.state_dict(), log=_quiet)
    assert report["fresh"] == [f"encoder.blocks.{i}.attention.mechanism.conv.weight" for i in range(2)]
    assert report["unused"] == []
    assert torch.equal(target.state_dict()["encoder.blocks.1.attention.value.weight"],
                       source.state_dict()["encoder.blocks.1.attention.value.weight"])


@pytest.mark.parametrize(
    ("attention", "unused"),
    [({"type": "reformer", "bucket_size": 8}, {"key"}), ({"type": "fnet"}, {"query", "key", "value", "output"})],
)
def test_weights_a_mechanism_has_no_place_for_are_unused(attention: dict, unused: set[str]) -> None:
    report = initialise_from(_model(seed=2, attention=attention), _model(seed=1).state_dict(), log=_quiet)
    expected = {f"encoder.blocks.{i}.attention.{p}.{w}" for i in range(2) for p in unused for w in ("weight", "bias")}
    assert set(report["unused"]) == expected
    assert report["fresh"] == []


def test_other_shapes_are_an_error_listing_them() -> None:
    with pytest.raises(InputError, match="other shapes") as error:
        initialise_from(_model(ffn_size=128), _model().state_dict(), log=_quiet, source="cp-0099.pt")
    message = str(error.value)
    assert "cp-0099.pt" in message
    assert "encoder.blocks.0.ffn_in.weight: source (64, 32), model (128, 32)" in message
    assert "encoder.blocks.1.ffn_out.weight" in message


def test_foreign_state_is_an_error() -> None:
    with pytest.raises(InputError, match="shares no tensor name"):
        initialise_from(_model(), {"bert.embeddings.word_embeddings.weight": torch.zeros(VOCAB, 32)}, log=_quiet)
