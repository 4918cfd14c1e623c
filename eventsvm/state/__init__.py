"""Read models and state folds over the log."""
