"""Image-text pairs for CLIP: the pairs datamodule and a source class per format it reads."""
