"""Residual Stream Lab: helpers for the course notebooks, one module per concept.

Importing this package has no side effects; heavy libraries load when a function needs them.
"""

from .model import ModelUnavailableError, default_device, load_model, seed_everything

__all__ = ["ModelUnavailableError", "default_device", "load_model", "seed_everything"]
