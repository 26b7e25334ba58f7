"""Data: readers, sources, ROI boxes, transforms, prepared datasets and built-in datasets."""
