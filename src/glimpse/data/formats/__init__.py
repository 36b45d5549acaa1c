"""Parsers and readers of on-disk formats: caption files, pair files and WebDataset tar shards."""
