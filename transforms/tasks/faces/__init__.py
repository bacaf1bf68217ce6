"""Face steps: detection, aligned crops, embeddings and matching."""
