"""Learned analysis operators for denoising, by exactly differentiated
unrolled Chambolle-Pock iterations (last iterate or ergodic average)."""

from ._denoiser import ImageDenoiser
from ._estimator import AnalysisOperatorLearner
from ._noise import estimate_sigma
from ._pretrained import denoise_image
from ._unrolled import unrolled_denoise, unrolled_loss_grad

__all__ = [
    "AnalysisOperatorLearner",
    "ImageDenoiser",
    "denoise_image",
    "estimate_sigma",
    "unrolled_denoise",
    "unrolled_loss_grad",
]
__version__ = "0.1.0"
