"""Running the analytics (dbt) and, later, detection around the raw tables."""
