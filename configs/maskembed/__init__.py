"""Configs of experiments/maskembed.py."""
