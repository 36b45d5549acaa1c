"""Self-supervised learning data: augmented views of the images of a labelled image datamodule."""
