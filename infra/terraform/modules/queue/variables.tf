variable "name" {
  description = "Name of the event queue (FIFO: ends in .fifo)."
  type        = string
}

variable "dead_letter_name" {
  description = "Name of the dead-letter queue (FIFO: ends in .fifo)."
  type        = string
}

variable "max_receive_count" {
  description = "Receives after which SQS moves a message to the DLQ; the same number as the workers' EVENTFLEET_MAX_RECEIVE_COUNT, at least twice their EVENTFLEET_MAX_ATTEMPTS."
  type        = number
  default     = 50

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "max_receive_count is 1 to 1000."
  }
}

variable "visibility_timeout_seconds" {
  description = "Default visibility timeout of both queues; the same number as EVENTFLEET_VISIBILITY_TIMEOUT_S."
  type        = number
  default     = 30
}

variable "handler_timeout_seconds" {
  description = "The workers' EVENTFLEET_HANDLER_TIMEOUT_S; the visibility timeout must exceed it plus the heartbeat margin."
  type        = number
  default     = 20
}

variable "heartbeat_margin_seconds" {
  description = "Margin for the heartbeat's ChangeMessageVisibility call to land before a message would reappear."
  type        = number
  default     = 5
}

variable "receive_wait_time_seconds" {
  description = "Default long-poll wait of a receive that does not set its own (the workers set EVENTFLEET_RECEIVE_WAIT_S, 5 s by default)."
  type        = number
  default     = 5
}

variable "message_retention_seconds" {
  description = "How long an undelivered message stays on the event queue (default 4 days)."
  type        = number
  default     = 345600
}

variable "dead_letter_retention_seconds" {
  description = "How long a message stays on the DLQ (default and maximum: 14 days)."
  type        = number
  default     = 1209600

  validation {
    condition     = var.dead_letter_retention_seconds >= 60 && var.dead_letter_retention_seconds <= 1209600
    error_message = "dead_letter_retention_seconds is 60 to 1209600 (14 days)."
  }
}

variable "kms_key_arn" {
  description = "ARN of the customer managed key that encrypts both queues."
  type        = string
}

variable "kms_data_key_reuse_period_seconds" {
  description = "How long SQS reuses a data key before calling KMS again (60 to 86400)."
  type        = number
  default     = 300
}

variable "tags" {
  description = "Tags for both queues."
  type        = map(string)
  default     = {}
}
