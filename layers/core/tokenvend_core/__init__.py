"""The runtime shared by tokenvend's Lambda functions, shipped as a layer."""
