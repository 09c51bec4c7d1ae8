"""Sum the MLA rope key's gradient over tensor-parallel ranks (megatron-core 0.16.1, local spec).

The bug (NVIDIA/Megatron-LM issue #1699, upstream fix in PR #6839): with the local layer spec,
``MLASelfAttention.linear_kv_down_proj`` is a ColumnParallelLinear. In 0.16.1's
``MLASelfAttention.get_query_key_value_tensors`` (multi_latent_attention.py lines 604-614) its
output [s, b, (kv_lora_rank + qk_pos_emb_head_dim) / TP] is all-gathered over TP with
``gather_from_tensor_model_parallel_region`` (backward: keep this rank's slice) and split into
``kv_compressed`` and the rope key ``k_pos_emb`` [s, b, qk_pos_emb_head_dim]. ``k_pos_emb`` is
shared by all heads but each rank only applies it to its own heads, so its gradient holds only
this rank's heads' part, and nothing sums it over TP (``kv_compressed`` is fine: the column-parallel
``linear_kv_up_proj`` all-reduces its input gradient). The rope-key rows of linear_kv_down_proj
then get a wrong gradient: measured after 2 GRPO steps at TP2, up to 2.1e-2 from TP1 in those rows.

The fix, without copying megatron's 300-line method: a forward hook on ``linear_kv_down_proj``
all-gathers its output over TP and scatters the sequence, giving [s / TP, b, kv_lora_rank +
qk_pos_emb_head_dim], the output of a replicated (non-TP) down projection under sequence parallel.
Megatron then takes its branch for that case (lines 615-622), which all-gathers ``k_pos_emb`` over
the sequence. In backward that gather reduce-scatters ``k_pos_emb``'s gradient over TP and the
hook's scatter all-gathers it back: together the all-reduce that upstream's fix adds. The forward
only copies values: outputs are bit-identical to the unfixed model's.

Only sequence parallel is handled, which r1hpc always uses with TP (``model.transformer_config``).
Without it the hook would have to all-reduce the rope key's slice of the gradient itself, and
``copy_to_tensor_model_parallel_region`` silently does not for a slice: 0.16.1's ``mappings._reduce``
all-reduces ``input_.contiguous()`` and returns ``input_``, so a non-contiguous gradient comes back
unreduced (measured: the rope-key rows' gradient still 6e-3 off TP1's).
"""

from __future__ import annotations

from typing import Any

import torch
from megatron.core.tensor_parallel.layers import ColumnParallelLinear
from megatron.core.tensor_parallel.mappings import (
    gather_from_tensor_model_parallel_region,
    scatter_to_sequence_parallel_region,
)
from megatron.core.transformer.multi_latent_attention import MLASelfAttention


def _full_width_kv_latent(
    module: ColumnParallelLinear, args: Any, output: tuple[torch.Tensor, Any]
) -> tuple[torch.Tensor, Any]:
    """Forward hook of linear_kv_down_proj: its TP-sharded output as a replicated Linear's under SP.

    output: ([s, b, (kv_lora_rank + qk_pos_emb_head_dim) / TP], bias);
    returns ([s / TP, b, kv_lora_rank + qk_pos_emb_head_dim], bias).
    """
    kv_local, bias = output
    kv_full = gather_from_tensor_model_parallel_region(kv_local, group=module.tp_group)
    return scatter_to_sequence_parallel_region(kv_full, group=module.tp_group), bias


def sum_rope_key_grad_over_tp(model: torch.nn.Module) -> int:
    """Install the fix on every MLA self-attention of ``model`` whose kv down projection is TP-sharded.

    A no-op (returns 0) at TP=1 or with a replicated down projection (Transformer Engine's
    TELinear spec), which megatron already handles. Returns the number of layers patched.
    Raises NotImplementedError for a TP-sharded one without sequence parallel (see the module doc).
    """
    patched = 0
    for attn in model.modules():
        if not isinstance(attn, MLASelfAttention):
            continue
        proj = attn.linear_kv_down_proj
        if type(proj) is not ColumnParallelLinear or proj.tp_group.size() == 1:
            continue
        if not attn.config.sequence_parallel:
            raise NotImplementedError(
                "MLA rope-key gradient fix: tensor parallel without sequence parallel is not handled"
            )
        proj.register_forward_hook(_full_width_kv_latent)
        patched += 1
    return patched
