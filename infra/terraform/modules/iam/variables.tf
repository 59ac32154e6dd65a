variable "name_prefix" {
  description = "Fleet name prefix; roles are <name_prefix>-ingress-task and <name_prefix>-worker-task."
  type        = string
}

variable "queue_arn" {
  description = "ARN of the event queue."
  type        = string
}

variable "dead_letter_arn" {
  description = "ARN of the dead-letter queue."
  type        = string
}

variable "queue_kms_key_arn" {
  description = "ARN of the key that encrypts both queues."
  type        = string
}

variable "table_arns" {
  description = "Table ARNs by role."
  type = object({
    idempotency   = string
    audit         = string
    retries       = string
    webhooks      = string
    alarm_threads = string
    event_log     = string
  })
}

variable "event_log_index_arns" {
  description = "ARNs of the event log table's indexes (operators query by_hour)."
  type        = list(string)
}

variable "idempotency_index_arns" {
  description = "ARNs of the idempotency table's indexes (the workers query by_event_id)."
  type        = list(string)
}

variable "tables_kms_key_arn" {
  description = "ARN of the key that encrypts the tables."
  type        = string
}

variable "ops_topic_arn" {
  description = "ARN of the ops topic the workers publish to."
  type        = string
}

variable "confirm_subscription_topic_arns" {
  description = "Topics whose subscription confirmations the workers may confirm (the alarm topic and any other allowed topic)."
  type        = list(string)
}

variable "topics_kms_key_arn" {
  description = "ARN of the key that encrypts the topics."
  type        = string
}

variable "metrics_namespace" {
  description = "CloudWatch namespace the workers publish to (EVENTFLEET_CLOUDWATCH_NAMESPACE)."
  type        = string
}

variable "console_enabled" {
  description = "Whether to make the console's task role."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for the roles and the policy."
  type        = map(string)
  default     = {}
}
