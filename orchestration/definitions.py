"""The Dagster code location: `dagster dev -m orchestration.definitions`."""

from dagster import Definitions, in_process_executor

from orchestration.assets import alert_deliveries, bagula_dbt_models, detection
from orchestration.resources import resources
from orchestration.sensors import make_schedules, make_sensors

# The sensor's interval is a deployment choice, read by Dagster only when it evaluates.
SENSOR_INTERVAL_S = 10

defs = Definitions(
    assets=[bagula_dbt_models, detection, alert_deliveries],
    sensors=make_sensors(SENSOR_INTERVAL_S),
    schedules=make_schedules(bagula_dbt_models),
    resources=resources(),
    # One process per run, not per step: a run is short, and a process start costs
    # seconds of imports (dbt, polars, scikit-learn) against the 60 s freshness target.
    executor=in_process_executor,
)
