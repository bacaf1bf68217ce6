"""`imaginem report`: the static HTML site a reviewer works from."""
