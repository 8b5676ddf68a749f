"""sentiment-jobs: GRU sentiment classifiers over word2vec embeddings, trained and run on Ray."""

__version__ = "0.1.0"
