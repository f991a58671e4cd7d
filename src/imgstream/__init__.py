"""imgstream: an image-processing service whose parts talk through Redis Streams."""

__version__ = "0.1.0"
