"""Analytics of meter history: pandas in, pandas out; no database, no UI, no I/O.

The flow, one module each:

    snapshots --meter_movement--> movement --rollup--> hourly / daily rollups
    (movement.py)                             (rollups.py: add_money, merge_rollups)
    rollups --kpis / kpi_change--> KPI dicts            (kpis.py)
    rollups --series_over_time, by_location, ...--> chart frames   (charts.py)
    readings + flags + failures --data_quality--> DataQuality      (quality.py)
    periods and buckets in the casino's gaming-day clock           (periods.py)

Each module's docstring defines the frames it reads and writes.
"""

from smib_core.analytics.charts import (
    by_location,
    heatmap_hour_weekday,
    hold_by_cabinet,
    series_over_time,
    sparkline_per_cabinet,
    top_bottom_cabinets,
)
from smib_core.analytics.kpis import (
    KpiChange,
    Kpis,
    kpi_change,
    kpi_table,
    kpis,
    meter_win,
    net_win,
)
from smib_core.analytics.movement import MOVEMENT_METERS, MovementPolicy, meter_movement
from smib_core.analytics.periods import bucket_start, period_bounds, previous_period
from smib_core.analytics.quality import DataQuality, data_quality
from smib_core.analytics.rollups import (
    add_money,
    merge_rollups,
    rollup,
    select_period,
    update_rollups,
)

__all__ = [
    "MOVEMENT_METERS",
    "DataQuality",
    "KpiChange",
    "Kpis",
    "MovementPolicy",
    "add_money",
    "bucket_start",
    "by_location",
    "data_quality",
    "heatmap_hour_weekday",
    "hold_by_cabinet",
    "kpi_change",
    "kpi_table",
    "kpis",
    "merge_rollups",
    "meter_movement",
    "meter_win",
    "net_win",
    "period_bounds",
    "previous_period",
    "rollup",
    "select_period",
    "series_over_time",
    "sparkline_per_cabinet",
    "top_bottom_cabinets",
    "update_rollups",
]
