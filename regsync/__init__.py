"""regsync: keep container-image mirrors in sync."""

__version__ = "0.1.0"
