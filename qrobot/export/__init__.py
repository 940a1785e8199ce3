"""Datasets in other formats: `qrobot export lerobot` (qrobot.export.lerobot)."""
