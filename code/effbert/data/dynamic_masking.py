"""Dynamic masking (RoBERTa's): every epoch draws a row's masks anew, with the rule the shards were built with.

A shard row holds its masked tokens and, at each masked position, the original token, so the original
row is recovered exactly and masked again here, by InstanceMaker.mask with the shard set's own settings
(masked_lm_prob, max_predictions, specials and vocabulary from its manifest). The draw of a row depends
only on (seed, epoch, row index): a resumed run, which knows its epoch and the rows of each batch, sees the
masks it would have seen. The shards' static masks still serve the dev set and `masking: static`.
"""

from __future__ import annotations

import numpy as np
import torch

from effbert.constants import IGNORE
from effbert.data.instances import InstanceMaker
from effbert.data.tokenizer import SpecialTokens


class DynamicMasking:
    def __init__(self, manifest: dict, seed: int):
        tokenizer = manifest["tokenizer"]
        self.maker = InstanceMaker(int(manifest["max_seq_len"]), SpecialTokens(**tokenizer["specials"]),
                                   int(tokenizer["vocab_size"]), float(manifest["masked_lm_prob"]),
                                   int(manifest["max_predictions"]), float(manifest["short_seq_prob"]))
        self.seed = seed

    def __call__(self, batch: dict[str, torch.Tensor], indices: np.ndarray, epoch: int) -> dict[str, torch.Tensor]:
        """The batch of rows `indices` (ShardDataset.batch) with the masks of `epoch` in place of the shards'."""
        ids, labels = batch["input_ids"].numpy(), batch["mlm_labels"].numpy()
        original = np.where(labels != IGNORE, labels, ids)
        lengths = batch["attention_mask"].sum(1).numpy()
        masked, predicted = original.copy(), np.full_like(labels, IGNORE)
        for row, (index, n) in enumerate(zip(indices, lengths, strict=True)):
            rng = np.random.default_rng([self.seed, epoch, int(index)])
            row_masked, row_labels = self.maker.mask(original[row, :n].astype(np.int32), rng)
            masked[row, :n], predicted[row, :n] = row_masked, row_labels
        return {**batch, "input_ids": torch.from_numpy(masked), "mlm_labels": torch.from_numpy(predicted)}
