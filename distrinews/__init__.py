"""DistriNews: distributed fine-tuning, tracking, export and serving of an AG News classifier."""
