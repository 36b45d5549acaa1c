"""Images with reference captions: the captioning datamodules, Flickr8k, COCO and feature caches."""
