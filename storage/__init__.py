"""Where molhpo keeps things: Redis key layout, report stream, decisions, the study store."""
