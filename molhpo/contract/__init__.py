"""What the coordinator, the trainer and the command line agree on, beside the wire contract
(``molhpo.v1``): the catalogue of model families, data sets and hyperparameters
(``catalogue``), typed errors and their gRPC status codes (``errors``), store attribute keys
(``attrs``), failure classes and objective directions (``enums``).

Both services and the CLI import this package; it imports neither of them, nor torch, RDKit or
Optuna (``tests/unit/test_import_boundaries.py`` checks it).
"""
