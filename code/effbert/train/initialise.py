"""Start a model from another model's weights: a shorter-context checkpoint, another attention type, or BERT.

`initialise_from` copies every tensor the source has under the same name and shape, and says exactly what
it did not copy:

- position embeddings: a longer target repeats the source's rows (512 -> 4096: rows 0..511 eight times);
  a shorter one keeps the first rows (truncation loses nothing the shorter model could use); a target
  length that is not a multiple of the source's is an error.
- fresh: target tensors the source lacks (a Linformer projection, a Nystrom/YOSO conv, an SOP head) keep
  their initialisation; they are listed.
- unused: source tensors the target lacks (Reformer has no key projection, FNet no projections at all,
  a head this model does not have); they are listed.
- any other shape difference is an error listing every such tensor: a silent partial load would train a
  different model than the config says.

How this matches the seeds' long-context and BERT-initialised runs: docs/implementations.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from effbert.errors import InputError

POSITION_KEY = "encoder.embeddings.position.weight"


def _aliases(state: dict[str, torch.Tensor]) -> dict[str, tuple[str, ...]]:
    """Names that share one tensor (the MLM decoder tied to the word embeddings, Linformer's layer sharing)."""
    groups: dict[tuple, list[str]] = {}
    for key, tensor in state.items():
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        groups.setdefault(where, []).append(key)
    return {key: tuple(group) for group in groups.values() for key in group}


def _positions(source: torch.Tensor, target_rows: int) -> tuple[torch.Tensor, str]:
    """The source's position embeddings fitted to `target_rows` rows, and what was done (for the report)."""
    rows = source.shape[0]
    if target_rows == rows:
        return source, "copied"
    if target_rows < rows:
        return source[:target_rows], f"truncated {rows} -> {target_rows}"
    if target_rows % rows:
        raise InputError(
            f"{POSITION_KEY}: model.max_seq_len {target_rows} is not a multiple of the source's {rows} position "
            f"embeddings (tiling needs a multiple, e.g. {rows * (target_rows // rows + 1)})"
        )
    return source.repeat(target_rows // rows, 1), f"tiled {rows} -> {target_rows}"


def initialise_from(
    model: nn.Module,
    source_state: dict[str, torch.Tensor],
    *,
    log: Callable[[str], None] = print,
    source: str = "source checkpoint",
) -> dict:
    """Copy `source_state` (a state dict, e.g. a checkpoint's "model") into `model`; return a report.

    Report: {"loaded": [keys], "positions": "copied" | "tiled 512 -> 4096" | "truncated ..." | None,
    "fresh": [target keys left at their initialisation], "unused": [source keys not used]}.
    `source` names the checkpoint in messages.
    """
    target = model.state_dict()
    aliases = _aliases(target)
    mismatched, updates, positions = [], {}, None
    for key, tensor in target.items():
        if key not in source_state:
            continue
        value = source_state[key]
        if key == POSITION_KEY and value.dim() == 2 and value.shape[1] == tensor.shape[1]:
            value, positions = _positions(value, tensor.shape[0])
        if tuple(value.shape) != tuple(tensor.shape):
            mismatched.append(f"{key}: source {tuple(value.shape)}, model {tuple(tensor.shape)}")
            continue
        updates[key] = value
    if mismatched:
        raise InputError(f"{source}: {len(mismatched)} tensor(s) have other shapes than this model's:\n  "
                         + "\n  ".join(mismatched))
    if not updates:
        raise InputError(f"{source}: shares no tensor name with this model (is it an effbert checkpoint?)")

    with torch.no_grad():
        for key, value in updates.items():
            target[key].copy_(value)  # state_dict tensors share storage with the parameters
    # a tied name counts as loaded when any of its aliases was (the MLM decoder is the word embeddings)
    fresh = [k for k in target if k not in updates and not any(a in updates for a in aliases[k])]
    unused = [k for k in source_state if k not in target]
    report = {"loaded": list(updates), "positions": positions, "fresh": fresh, "unused": unused}

    log(f"initialised {len(updates)} of {len(target)} tensors from {source}"
        + (f"; position embeddings {positions}" if positions and positions != "copied" else ""))
    if fresh:
        log(f"kept their fresh initialisation ({len(fresh)}, not in {source}): {', '.join(fresh)}")
    if unused:
        log(f"unused tensors of {source} ({len(unused)}, not in this model): {', '.join(unused)}")
    return report
