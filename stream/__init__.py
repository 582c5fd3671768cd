"""learnstream: streaming online learning on Kafka.

Workers in one consumer group score every event with an online logistic
regression, publish the prediction, then learn from the event's label.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

# The library only adds a NullHandler; entry points configure logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())
