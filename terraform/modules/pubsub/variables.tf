variable "project_id" {
  description = "The project that owns the topics and subscriptions."
  type        = string
}

variable "project_number" {
  description = "The project's number: it names the Pub/Sub service agent that dead-letters messages."
  type        = string
}

variable "topology" {
  description = "The decoded topology.yaml: topics, subscriptions (with their consumer stage), defaults and the dead-letter topic."
  type = object({
    dead_letter_topic = string
    defaults = object({
      ack_deadline_seconds = number
      message_retention    = string
      retry = object({
        minimum_backoff = string
        maximum_backoff = string
      })
      max_delivery_attempts = number
    })
    topics = list(object({
      name = string
    }))
    subscriptions = list(object({
      name                  = string
      topic                 = string
      consumer              = optional(string)
      ack_deadline_seconds  = optional(number)
      max_delivery_attempts = optional(number)
      # The subscription's own backoff (the notifier's), else the defaults'.
      retry = optional(object({
        minimum_backoff = string
        maximum_backoff = string
      }))
    }))
  })
}

variable "push_endpoints" {
  description = "Per consumer stage: the HTTPS URL of its function and the service account whose OIDC token Pub/Sub presents to it."
  type = map(object({
    url                   = string
    service_account_email = string
  }))
}

variable "labels" {
  description = "Labels applied to topics and subscriptions."
  type        = map(string)
  default     = {}
}
