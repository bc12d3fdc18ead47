"""CloudTrail: the event schema, reading log files, sources (Lake, S3 trail) and matching events to sessions."""
