# The event graph from topology.yaml: every topic, and every subscription with its retry
# policy and dead-letter topic. Subscriptions with a consumer push to that stage's Cloud
# Function; the one without a consumer (the dead-letter hold) is a pull subscription
# where poison messages wait for a human.
locals {
  defaults          = var.topology.defaults
  dead_letter_topic = var.topology.dead_letter_topic

  topics = { for topic in var.topology.topics : topic.name => topic }

  # Subscriptions feeding a stage: retried with backoff, dead-lettered after N attempts.
  push_subscriptions = { for sub in var.topology.subscriptions : sub.name => sub if sub.consumer != null }
  # The end of the line: nobody consumes these, so there is nothing to dead-letter to.
  hold_subscriptions = { for sub in var.topology.subscriptions : sub.name => sub if sub.consumer == null }

  pubsub_service_agent = "serviceAccount:service-${var.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic" "this" {
  #checkov:skip=CKV_GCP_83:Events carry ids, URIs and metrics, not the data itself; Google-managed encryption is enough and CMEK would add a KMS key ring and per-message KMS cost.
  for_each = local.topics

  project = var.project_id
  name    = each.key
  labels  = var.labels
}

resource "google_pubsub_subscription" "push" {
  for_each = local.push_subscriptions

  project = var.project_id
  name    = each.key
  topic   = google_pubsub_topic.this[each.value.topic].id
  labels  = var.labels

  # For a push subscription this is how long the endpoint may take to answer; the
  # function's timeout is set to the same value, so a slow stage is not redelivered
  # while it still runs.
  ack_deadline_seconds       = coalesce(each.value.ack_deadline_seconds, local.defaults.ack_deadline_seconds)
  message_retention_duration = local.defaults.message_retention

  expiration_policy {
    ttl = "" # never expire, however quiet the pipeline is
  }

  retry_policy {
    minimum_backoff = coalesce(try(each.value.retry.minimum_backoff, null), local.defaults.retry.minimum_backoff)
    maximum_backoff = coalesce(try(each.value.retry.maximum_backoff, null), local.defaults.retry.maximum_backoff)
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.this[local.dead_letter_topic].id
    max_delivery_attempts = coalesce(each.value.max_delivery_attempts, local.defaults.max_delivery_attempts)
  }

  push_config {
    # functions-framework turns a raw Pub/Sub push body into a CloudEvent and reads the
    # topic from this path, exactly as the local emulator stack delivers it.
    push_endpoint = "${var.push_endpoints[each.value.consumer].url}/projects/${var.project_id}/topics/${each.value.topic}"

    oidc_token {
      service_account_email = var.push_endpoints[each.value.consumer].service_account_email
      audience              = var.push_endpoints[each.value.consumer].url
    }
  }

  depends_on = [google_pubsub_topic_iam_member.service_agent_publishes_dead_letters]
}

resource "google_pubsub_subscription" "hold" {
  #checkov:skip=CKV_MR_3:The dead-letter hold is the end of the line: a pull subscription nobody consumes, so it has nothing to dead-letter to.
  for_each = local.hold_subscriptions

  project = var.project_id
  name    = each.key
  topic   = google_pubsub_topic.this[each.value.topic].id
  labels  = var.labels

  ack_deadline_seconds       = coalesce(each.value.ack_deadline_seconds, local.defaults.ack_deadline_seconds)
  message_retention_duration = local.defaults.message_retention
  retain_acked_messages      = false

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering is done by the Pub/Sub service agent: it must be able to publish to the
# dead-letter topic and to acknowledge (subscribe to) every source subscription.
resource "google_pubsub_topic_iam_member" "service_agent_publishes_dead_letters" {
  project = var.project_id
  topic   = google_pubsub_topic.this[local.dead_letter_topic].name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "service_agent_forwards_dead_letters" {
  for_each = local.push_subscriptions

  project      = var.project_id
  subscription = google_pubsub_subscription.push[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
