"""Output-shape arithmetic shared by the convolutional layers."""


def conv_output_length(length, kernel_size, padding, stride, dilation):
    if length is None:
        return None
    if padding == "same":
        return -(-length // stride)
    dilated_kernel = (kernel_size - 1) * dilation + 1
    return max(0, (length - dilated_kernel) // stride + 1)


def conv_output_shape(input_shape, output_channels, kernel_size, strides, padding,
                      dilation_rate):
    spatial = tuple(
        conv_output_length(length, k, padding, s, d)
        for length, k, s, d in zip(input_shape[1:3], kernel_size, strides, dilation_rate)
    )
    return (input_shape[0],) + spatial + (output_channels,)
