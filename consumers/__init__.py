"""Entry points that read topics: the workers and the predictions reader."""
