"""Geometric self-ensemble: denoise flipped and rotated copies, average them.

A learned filter bank is not invariant to the image's orientation, so the
flips and rotations of the square (the dihedral group of order 8) give
slightly different estimates; their mean, each mapped back, has a lower
error than any one of them (the "self-ensemble" of Timofte et al., 2016, and
Lim et al., 2017).  The time grows with the number of copies.

The subsets used are groups nested in one another, so that more copies
only add estimates: 2 is the identity and the transpose, 4 adds the
rotation by 180 degrees and the anti-transpose, 8 all eight.  The
transpose came first because it gained most as the second copy on Set12
(``benchmarks/DENOISE_RESULTS.md``).
"""

import numpy as np

#: Number of copies -> the transforms, as (quarter turns, flipped first).
TRANSFORMS = {
    1: ((0, False),),
    2: ((0, False), (1, True)),
    4: ((0, False), (1, True), (2, False), (3, True)),
    8: tuple((k, flip) for flip in (False, True) for k in range(4)),
}


def _forward(images, k, flip):
    """The transformed copy of the ``(N, H, W)`` stack, C-contiguous."""
    if flip:
        images = images[..., ::-1]
    return np.ascontiguousarray(np.rot90(images, k, axes=(-2, -1)))


def _backward(images, k, flip):
    """The inverse of :func:`_forward` (a view)."""
    images = np.rot90(images, -k, axes=(-2, -1))
    return images[..., ::-1] if flip else images


def self_ensemble(denoise, images, n_copies):
    """Mean of ``denoise`` over ``n_copies`` flips/rotations of ``images``.

    ``denoise`` maps an ``(N, H, W)`` stack to one of the same shape (called
    on ``(N, W, H)`` stacks too); ``n_copies`` is a key of
    :data:`TRANSFORMS`.  The identity comes first, so ``n_copies=1`` is one
    plain call.
    """
    transforms = TRANSFORMS[n_copies]
    if len(transforms) == 1:
        return denoise(images)
    # A copy: the identity's output may be ``images`` itself.
    total = np.array(denoise(images))
    for k, flip in transforms[1:]:
        total += _backward(denoise(_forward(images, k, flip)), k, flip)
    total /= len(transforms)
    return total
