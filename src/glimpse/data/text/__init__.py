"""Character corpora and their batching, vocabularies, tokenizers, and the char-text and
sentence-pair datamodules."""
