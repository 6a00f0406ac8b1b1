output "topic_ids" {
  description = "Topic name => topic id (projects/P/topics/T)."
  value       = { for name, topic in google_pubsub_topic.this : name => topic.id }
}

output "topic_names" {
  description = "The topic names, as in topology.yaml."
  value       = sort(keys(google_pubsub_topic.this))
}

output "subscription_names" {
  description = "All subscription names, as in topology.yaml."
  value       = sort(concat(keys(google_pubsub_subscription.push), keys(google_pubsub_subscription.hold)))
}
