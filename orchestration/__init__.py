"""Everything that runs after ingest: the dbt marts, detection and alerts, orchestrated
by Dagster (definitions, assets, sensors). Imports ``ml``, never the API."""
