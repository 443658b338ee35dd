"""deepfeat: simplified transfer learning with cached CNN embeddings and scikit-learn heads."""

__version__ = "0.3.0"
