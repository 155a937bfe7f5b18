"""Images of any real dtype and range, gray, colour or stacked, for the denoisers.

The learned models act on gray planes with values in about ``[0, 1]`` and
noise of their trained level.  :func:`as_planes` reads an array into float64
planes; :meth:`Planes.denoise` maps every plane affinely onto the model's
level, denoises and maps back; :meth:`Planes.restore` returns the input's
layout, dtype and range.
"""

import numpy as np

# Orthonormal opponent colour transform (rows: luminance, red-blue,
# green-magenta): i.i.d. noise of standard deviation s in RGB stays i.i.d. of
# deviation s in every opponent channel, so one gray model serves all three.
OPPONENT = np.array(
    [
        [1 / np.sqrt(3), 1 / np.sqrt(3), 1 / np.sqrt(3)],
        [1 / np.sqrt(2), 0.0, -1 / np.sqrt(2)],
        [1 / np.sqrt(6), -2 / np.sqrt(6), 1 / np.sqrt(6)],
    ]
)


class Planes:
    """An image as float64 data in a canonical layout, and how to give it back.

    ``data`` is ``(H, W)`` (kind ``"gray"``), ``(N, H, W)`` (``"stack"``) or
    ``(H, W, C)`` (``"colour"``, the channel axis moved last): ``C == 3``
    is RGB, ``4`` RGBA and ``2`` gray + alpha; alpha is never denoised.
    """

    def __init__(self, data, kind, dtype, channel_axis, in_unit_range):
        self.data, self.kind, self.dtype = data, kind, dtype
        self.channel_axis = channel_axis
        # Float input within [0, 1] gives output within [0, 1].
        self.in_unit_range = in_unit_range

    @property
    def has_alpha(self):
        return self.kind == "colour" and self.data.shape[2] in (2, 4)

    @property
    def n_colours(self):
        """Channels denoised (alpha excluded)."""
        if self.kind != "colour":
            return 1
        return self.data.shape[2] - self.has_alpha

    @property
    def rgb(self):
        return self.kind == "colour" and self.data.shape[2] in (3, 4)

    def colour_planes(self):
        """Per image (one, or N for a stack), its 2-D planes to be denoised."""
        if self.kind == "gray":
            return [[self.data]]
        if self.kind == "stack":
            return [[plane] for plane in self.data]
        return [[self.data[:, :, c] for c in range(self.n_colours)]]

    def data_range(self):
        """Range of the values: the dtype's for integers, else 1 or max - min.

        1 for float images whose values lie in ``[-1, 2]``, all but a
        thousandth of them (images in ``[0, 1]``, possibly with unclipped
        noise), else the span of the values.
        """
        if np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            return float(info.max) - float(info.min)
        lo, hi = float(self.data.min()), float(self.data.max())
        if lo >= -1.0 and hi <= 2.0:
            return 1.0
        # Unclipped noise of std 75/255 puts about 3 values in 10^4 of a
        # [0, 1] image outside [-1, 2]; their span would triple the range.
        outside = np.count_nonzero((self.data < -1.0) | (self.data > 2.0))
        if outside <= 1e-3 * self.data.size:
            return 1.0
        return hi - lo if hi > lo else 1.0

    def denoise(self, denoise_gray, sigma, model_sigma, color="opponent"):
        """Denoise all planes with a gray model trained at ``model_sigma``.

        Every plane ``x`` (the opponent channels of an RGB image, unless
        ``color="per_channel"``) is given to ``denoise_gray`` as
        ``z = a x + b`` with ``a = model_sigma / sigma``, so that its noise
        has the trained level, and ``b`` moves the plane's median ``m`` to
        the nearest point of ``[0, 1]`` (where the training images lie) if
        ``a m`` is outside it, else ``b = 0``: the learned filters are not
        zero-sum (the shipped model uses absolute intensity), so an offset
        changes the result (data around 10000 with noise 100 would be
        ruined).  The output is ``(D(z) - b) / a``.

        Returns the denoised data in the canonical float64 layout.
        """
        a = model_sigma / sigma
        colour = self.kind == "colour"
        x = self.data[:, :, : self.n_colours] if colour else self.data
        if colour:
            if self.rgb and color == "opponent":
                x = x @ OPPONENT.T
            x = np.moveaxis(x, 2, 0)
        elif self.kind == "gray":
            x = x[None]
        z = a * x
        shift = median_shift(z)
        out = (denoise_gray(z + shift) - shift) / a
        if colour:
            out = np.moveaxis(out, 0, 2)
            if self.rgb and color == "opponent":
                out = out @ OPPONENT
            if self.has_alpha:
                out = np.concatenate([out, self.data[:, :, -1:]], axis=2)
        elif self.kind == "gray":
            out = out[0]
        return out

    def restore(self, out, original):
        """``out`` (canonical layout) in the input's layout, dtype and range.

        Integers are rounded and clipped to their dtype's range; float output
        is clipped to ``[0, 1]`` if the input lay within it, else not clipped.
        An alpha channel is copied from ``original`` bit for bit.
        """
        if np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            out = np.clip(np.round(out), info.min, info.max).astype(self.dtype)
        else:
            if self.in_unit_range:
                out = np.clip(out, 0.0, 1.0)
            out = out.astype(self.dtype)
        if self.kind == "colour":
            out = np.moveaxis(out, 2, self.channel_axis)
            if self.has_alpha:
                alpha = [slice(None)] * 3
                alpha[self.channel_axis] = -1
                out[tuple(alpha)] = np.asarray(original)[tuple(alpha)]
        return out


def median_shift(z):
    """Per image of a stack ``(n, H, W)``, what moves its median into ``[0, 1]``.

    The training images lie in ``[0, 1]``; a model sees an image ``z`` as
    ``z + b``, ``b`` of shape ``(n, 1, 1)``, 0 where the median already lies there.
    """
    medians = np.median(z, axis=(-2, -1), keepdims=True)
    return (np.clip(medians, 0.0, 1.0) - medians).astype(z.dtype, copy=False)


def as_planes(image, channel_axis=None, name="image"):
    """Validate an image of any real dtype; return its :class:`Planes`.

    2-D: gray.  3-D with ``channel_axis=None``: a stack of gray images.
    3-D with ``channel_axis``: one image with channels along that axis.
    """
    arr = np.asarray(image)
    if (
        not (
            np.issubdtype(arr.dtype, np.integer)
            or np.issubdtype(arr.dtype, np.floating)
        )
        or arr.dtype == np.bool_
    ):
        raise TypeError(
            f"{name} must have a real integer or floating dtype, got {arr.dtype}."
        )
    if channel_axis is None:
        if arr.ndim not in (2, 3):
            raise ValueError(
                f"{name} must be 2-D (gray) or 3-D (a stack of gray images; for a "
                f"colour image pass channel_axis), got shape {arr.shape}."
            )
        kind = "gray" if arr.ndim == 2 else "stack"
        data = arr.astype(np.float64)
    else:
        if arr.ndim != 3:
            raise ValueError(
                f"{name} with channel_axis={channel_axis} must be 3-D, got shape "
                f"{arr.shape}."
            )
        if not -3 <= channel_axis <= 2:
            raise ValueError(f"channel_axis={channel_axis} is out of range for 3-D.")
        channel_axis %= 3
        kind = "colour"
        data = np.moveaxis(arr, channel_axis, 2).astype(np.float64)
    if data.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}).")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    in_unit = bool(
        np.issubdtype(arr.dtype, np.floating) and data.min() >= 0 and data.max() <= 1
    )
    return Planes(data, kind, arr.dtype, channel_axis, in_unit)
