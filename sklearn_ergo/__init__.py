"""Learned analysis operators for denoising, by exactly differentiated
unrolled Chambolle-Pock iterations (last iterate or ergodic average)."""

from ._analysis_operator import AnalysisOperatorLearner
from ._image_denoiser import ImageDenoiser
from ._model_io import load_denoiser, save_denoiser
from ._noise import estimate_sigma
from ._pretrained import denoise_image
from ._unrolled import unrolled_denoise, unrolled_loss_grad

__all__ = [
    "AnalysisOperatorLearner",
    "ImageDenoiser",
    "denoise_image",
    "estimate_sigma",
    "load_denoiser",
    "save_denoiser",
    "unrolled_denoise",
    "unrolled_loss_grad",
]
__version__ = "0.1.0"
