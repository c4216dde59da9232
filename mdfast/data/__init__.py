"""Dataset loaders (real on-disk formats, never a download) and the small shipped demo data."""

from mdfast.data import mnist as mnist
