"""Click commands, one module per pipeline stage; registered lazily in builder.cli."""
