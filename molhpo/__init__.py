"""molhpo: hyperparameter optimisation of molecular property prediction models as a service."""

__version__ = "0.1.0"
