"""The package version, in one place: setup.py reads this file, `dspnet --version` prints it and
every exported SavedModel records it (`assets.extra/dspnet_metadata.json`)."""

__version__ = "0.2.0"
