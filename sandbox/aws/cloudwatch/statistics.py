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

PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d+)?|100)$")


def apply(state_dir: Path) -> None:
    from moto.cloudwatch import models

    from sandbox.network.alarms import statistic

    original = models.Statistics.get_statistics_for_type

    def get_statistics_for_type(self, stat: str):
        if PERCENTILE.match(stat or ""):
            return statistic(stat, self.metric_single_values_list)
        return original(self, stat)

    def less_than(self, other) -> bool:
        return (self.name or "", self.value or "") < (other.name or "", other.value or "")

    models.Statistics.get_statistics_for_type = get_statistics_for_type
    models.Dimension.__lt__ = less_than
