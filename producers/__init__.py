"""Entry points that put events on the features topic."""
