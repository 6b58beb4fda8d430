"""The training side: sampling and splits, batches and augmentation, optimizers and schedules,
the loop and its checkpoints; the cached features of a frozen backbone; evaluation (plain and TTA)
of a trained model."""
