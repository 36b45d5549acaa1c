"""Key-mapping converters from other libraries' checkpoints to glimpse models."""
