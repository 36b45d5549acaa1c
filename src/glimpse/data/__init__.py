"""LightningDataModules by kind of data, the DataSpec, the datamodule base and the downloader."""
