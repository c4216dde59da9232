"""Evaluation metrics."""

from mdfast.metrics import digit_frechet as digit_frechet
from mdfast.metrics import elbo as elbo
