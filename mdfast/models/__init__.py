"""Denoiser networks."""

from mdfast.models.mnist_unet import MNISTUNet as MNISTUNet
