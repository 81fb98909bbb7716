"""Everything between videos and a training batch: flow files, guidance sampling, datasets, built-in data."""
