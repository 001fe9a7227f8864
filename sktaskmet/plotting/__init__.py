"""Display classes in scikit-learn's style (``from_estimator`` / ``plot``).

matplotlib is optional (``pip install sktaskmet[plot]``): it is imported when a Display is
plotted, not when this module is imported.
"""

from ._discovery import AgreementScoreDisplay
from ._discovery_tasks import DiscoveredTasksDisplay
from ._surrogate import AttributionDisplay, InteractionDisplay
from ._taskmet import MetricCurveDisplay, MetricWeightsDisplay

__all__ = [
    "MetricCurveDisplay",
    "MetricWeightsDisplay",
    "AttributionDisplay",
    "InteractionDisplay",
    "AgreementScoreDisplay",
    "DiscoveredTasksDisplay",
]
