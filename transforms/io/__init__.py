"""Storage: local folders or Beam filesystems, Azure access and blobs, Azure Table keys."""
