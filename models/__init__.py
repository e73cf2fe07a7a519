"""Per-device state, features and failure-prediction scorers shared by training and serving."""
