"""Independent NumPy references: explicit per-example loops, no keras_dynconv code.

Convolutions are written from their definition (padding, dilation, strides, a
sliding-window sum), so they check the library rather than restate it.
"""

import numpy as np


def _same_padding(length, kernel, stride, dilation):
    effective = (kernel - 1) * dilation + 1
    out = -(-length // stride)
    total = max((out - 1) * stride + effective - length, 0)
    return total // 2, total - total // 2


def _pad(image, kernel_hw, strides, padding, dilation):
    """TF/Keras padding: 'same' puts the extra pixel after, as keras.ops.conv does."""
    if padding == "valid":
        return image
    pads = [
        _same_padding(image.shape[axis], kernel_hw[axis], strides[axis], dilation[axis])
        for axis in (0, 1)
    ]
    return np.pad(image, (pads[0], pads[1], (0, 0)))


def _windows(image, kernel_hw, strides, dilation):
    """`[H', W', kh, kw, C]` input windows for one `[H, W, C]` image."""
    kh, kw = kernel_hw
    dh, dw = dilation
    height, width = image.shape[:2]
    out_h = (height - ((kh - 1) * dh + 1)) // strides[0] + 1
    out_w = (width - ((kw - 1) * dw + 1)) // strides[1] + 1
    windows = np.empty((out_h, out_w, kh, kw, image.shape[2]), dtype=np.float64)
    for i in range(out_h):
        for j in range(out_w):
            top, left = i * strides[0], j * strides[1]
            windows[i, j] = image[top : top + (kh - 1) * dh + 1 : dh,
                                  left : left + (kw - 1) * dw + 1 : dw]
    return windows


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def conv2d(image, kernel, strides=1, padding="valid", dilation=1):
    """One example: `[H, W, Cin]` * `[kh, kw, Cin, Cout]`."""
    strides, dilation = _pair(strides), _pair(dilation)
    padded = _pad(image.astype(np.float64), kernel.shape[:2], strides, padding, dilation)
    windows = _windows(padded, kernel.shape[:2], strides, dilation)
    return np.einsum("hwabi,abio->hwo", windows, kernel.astype(np.float64))


def conv2d_kernel_gradient(images, projection, kernel_hw, strides=1, padding="valid",
                           dilation=1):
    """d/dkernel of sum(conv2d(images, kernel) * projection), `[kh, kw, Cin, Cout]`
    (the convolution is linear in its kernel: windows times projection)."""
    strides, dilation = _pair(strides), _pair(dilation)
    total = 0.0
    for image, weights in zip(images, projection):
        padded = _pad(image.astype(np.float64), kernel_hw, strides, padding, dilation)
        windows = _windows(padded, kernel_hw, strides, dilation)
        total = total + np.einsum("hwabi,hwo->abio", windows, weights.astype(np.float64))
    return total


def depthwise_conv2d(image, kernel, strides=1, padding="valid", dilation=1):
    """One example: `[H, W, C]` * `[kh, kw, C, M]` -> `[H', W', C*M]` (c-major)."""
    strides, dilation = _pair(strides), _pair(dilation)
    padded = _pad(image.astype(np.float64), kernel.shape[:2], strides, padding, dilation)
    windows = _windows(padded, kernel.shape[:2], strides, dilation)
    out = np.einsum("hwabc,abcm->hwcm", windows, kernel.astype(np.float64))
    return out.reshape(out.shape[0], out.shape[1], -1)


def routing(inputs, kernel, bias, activation="sigmoid", temperature=1.0,
            hidden_kernel=None, hidden_bias=None):
    pooled = inputs.reshape(inputs.shape[0], -1, inputs.shape[-1]).mean(axis=1)
    if hidden_kernel is not None:
        pooled = np.maximum(pooled @ hidden_kernel + hidden_bias, 0.0)
    logits = (pooled @ kernel + bias) / temperature
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    if activation == "softmax":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    if activation == "tanh":
        return np.tanh(logits)
    return np.maximum(logits, 0.0)


def cond_conv2d(inputs, experts, routing_weights, bias=None, depthwise=False, **conv):
    """Per-example loop: mix the experts with the routing weights, then convolve."""
    apply = depthwise_conv2d if depthwise else conv2d
    outputs = []
    for example, weights in zip(inputs, routing_weights):
        kernel = np.tensordot(weights, experts, axes=1)
        out = apply(example, kernel, **conv)
        if bias is not None:
            out = out + weights @ bias
        outputs.append(out)
    return np.stack(outputs)


def cond_dense(inputs, experts, routing_weights, bias=None):
    outputs = []
    for example, weights in zip(inputs, routing_weights):
        out = example.astype(np.float64) @ np.tensordot(weights, experts, axes=1)
        if bias is not None:
            out = out + weights @ bias
        outputs.append(out)
    return np.stack(outputs)


def sd_conv_mask(kernel, threshold, mask_temperature):
    """SD-Conv eq. 3-5 written as in the paper: a two-way softmax, then rounding."""
    psi1 = 1.0 / (1.0 + np.exp(-(np.abs(kernel.astype(np.float64)) - threshold)))
    psi0 = 1.0 - psi1
    logits = np.stack([psi1, psi0]) / mask_temperature
    logits = logits - logits.max(axis=0)
    soft = np.exp(logits[0]) / np.exp(logits).sum(axis=0)
    return np.round(soft)


def mod_block(inputs, hidden_kernel, kernel, capacity, block_fn):
    """CNN MoD: score, top-k, process, scale, add onto the first k channels."""
    channels = inputs.shape[-1]
    k = channels // capacity
    pooled = inputs.mean(axis=(1, 2))
    scores = 1.0 / (1.0 + np.exp(-(np.maximum(pooled @ hidden_kernel, 0.0) @ kernel)))
    outputs = inputs.astype(np.float64).copy()
    for b in range(inputs.shape[0]):
        order = np.argsort(-scores[b], kind="stable")[:k]
        processed = block_fn(inputs[b : b + 1, :, :, order])[0]
        outputs[b, :, :, :k] += processed * scores[b, order]
    return outputs
