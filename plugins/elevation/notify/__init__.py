"""Slack notifications: messages built from what happened (pure), an outbox in the queue database, a producer
that fills it and a sender that delivers it. Slack being down never holds up a grant or a revoke."""
