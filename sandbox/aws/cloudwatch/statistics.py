"""GetMetricData as CloudWatch answers it: percentiles, and dimensions in any order.

AWS behaviour mirrored here:
- Percentile statistics (`p99`, `p99.9`, …) are answered over the single values put in each
  period (PutMetricData `Value`, or `Values` with `Counts`, as the sandbox's load balancers
  publish TargetResponseTime); moto returned nothing for them.
- A metric's dimensions are a set: a query naming them in another order than they were put finds
  the same metric (moto's ordering of dimensions compared a value with a name, so the order
  decided whether anything was found).
"""

import re
from pathlib import Path

from sandbox.aws import seams

PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d+)?|100)$")


def apply(state_dir: Path) -> None:
    from moto.cloudwatch import models

    from sandbox.network.alarms import statistic

    def with_percentiles(moto):
        def get_statistics_for_type(self, stat: str):
            if PERCENTILE.match(stat or ""):
                return statistic(stat, self.metric_single_values_list)
            return moto(self, stat)

        return get_statistics_for_type

    def less_than(self, other) -> bool:
        return (self.name or "", self.value or "") < (other.name or "", other.value or "")

    seams.wrap(models.Statistics, "get_statistics_for_type", with_percentiles,
               signature="(self, stat: str) -> typing.SupportsFloat | None", owner=__name__)
    seams.replace(models.Dimension, "__lt__", less_than,
                  signature="(self, other: 'Dimension') -> bool", owner=__name__)
