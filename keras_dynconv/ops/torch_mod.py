"""A Mixture-of-Depths block's inference on torch, prepared once (`MoDBlock`).

The block's own work (score the channels, pick the top k, gather them, add the processed
ones back) is a dozen small ops at batch 1 and several passes over the whole activation
at batch 32, where the convolutions it runs on k = C/64 channels cost next to nothing.
Through `keras.ops` a ResNet75-MoD block at 56x56x256 took 134 ms at batch 32 on this
project's 2-core CPU, more than a full bottleneck (`python scripts/profile_torch_ops.py
--layers --models resnet50,resnet75_mod`). Here the selection is one `topk` of integer
keys, the selector's weights are kept in torch's layout, and a ReLU after the block
(`activation="relu"`) is applied while the output is written, so that the output costs
one pass over the input instead of a copy, an add and a ReLU layer's pass. Equal to
`MoDBlock.call` (tests/test_mod_block_prepared.py).
"""

from keras_dynconv.ops import selection
from keras_dynconv.ops import torch_conv


def prepared_mod_block(inputs, selector_hidden_kernel, selector_kernel, num_selected,
                       run_block, activation=None, relu=False):
    """`MoDBlock.call` for inference as a function of channels-last inputs shaped,
    typed and placed like `inputs`: `run_block` maps the `[B, H, W, k]` selected
    channels to the processed ones; `relu` applies a ReLU to the output, `activation`
    (a function of a tensor) any other activation."""
    import torch

    inputs = torch_conv.torch_tensor(inputs)
    hidden_kernel, kernel = (
        torch_conv.torch_tensor(value).detach().to(inputs.dtype)
        for value in (selector_hidden_kernel, selector_kernel)
    )
    channels = inputs.shape[-1]
    # Ties go to the lowest channel, as in `selection.stable_top_k`.
    tie_breaks = torch.arange(channels - 1, -1, -1, device=inputs.device)
    k = num_selected

    def run(x):
        pooled = x.mean(dim=(1, 2))
        scores = torch.sigmoid(torch.relu(pooled @ hidden_kernel) @ kernel)
        # A sigmoid's scores are not negative, so their float32 bits order as integers.
        bits = scores.float().view(torch.int32).long()
        keys = torch.add(tie_breaks, bits, alpha=2**32)
        top_channels = torch.topk(keys, k, dim=-1).indices
        top_scores = torch.gather(scores, 1, top_channels)
        update = run_block(selection.take_channels(x, top_channels)) * top_scores[:, None, None, :]
        if relu:
            outputs = torch.relu(x)
            outputs[..., :k] = torch.relu_(update.add_(x[..., :k]))
            return outputs
        outputs = selection.add_to_leading_channels(x, update)
        return outputs if activation is None else activation(outputs)

    return run
