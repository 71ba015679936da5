"""Model pieces: backbone loading, the bag-of-words operations, the retrieval model, pre-training."""
