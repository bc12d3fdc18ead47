"""The queue database: schema, migrations, and the one place that changes a request's state."""
