"""Generated from sdk/VERSION by `make generate`. DO NOT EDIT."""

__version__ = "0.1.1"
