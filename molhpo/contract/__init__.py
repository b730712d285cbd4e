"""What the coordinator, the trainer and the command line agree on, beside the wire contract
(``molhpo.v1``): store attribute keys, failure classes, objective directions.

Both services and the CLI import this package; it imports neither of them, nor torch, nor
RDKit.
"""
