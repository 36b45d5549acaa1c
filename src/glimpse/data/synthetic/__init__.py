"""The synthetic shapes generator, which writes real on-disk formats, and its datamodules."""
