"""Data: preparation of image classification splits and fast batch loading."""
