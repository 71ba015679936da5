"""Model pieces: backbone loading, the bag-of-words operations, the retrieval model, pre-training."""

# torch-free, so command-line choices read it cheaply
QUERY_TERMS = ("all", "own")  # a query's bag-of-words: the model's expansion, or its own word pieces only
