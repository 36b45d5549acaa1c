"""Labelled images: decoding, transforms, the ImageFolder datamodule and the datasets it reads."""
