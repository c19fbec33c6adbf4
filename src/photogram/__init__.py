"""photogram: a photo-sharing backend built the way Instagram built theirs."""

__version__ = "0.1.0"
