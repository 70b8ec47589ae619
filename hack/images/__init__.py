"""Builds Capstan's container images without a daemon (mmdebstrap + buildah) and pushes them."""
