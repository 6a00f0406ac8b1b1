"""notify: tell each model's webhooks of failed runs, rejections, deploys and drift.

Cloud Function (gen2) fed by the Pub/Sub subscriptions topology.yaml names for it.
"""

from modelrail.entry.functions import cloud_function

handle = cloud_function("notify")
