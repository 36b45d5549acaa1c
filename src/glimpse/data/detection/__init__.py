"""Object detection data: COCO-format datasets and the box-aware transforms."""
