"""pruneformer's version: a module of its own, so that modules recording it need not import the package."""

__version__ = "0.1.0"
