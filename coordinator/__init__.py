"""The coordinator: study lifecycle, sampling, pruning decisions, dispatch, the client API."""
