variable "name" {
  description = "Topic name."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the customer managed key that encrypts the topic."
  type        = string
}

variable "allow_cloudwatch_alarms" {
  description = "Let CloudWatch alarms of this account publish to the topic."
  type        = bool
  default     = false
}

variable "extra_subscriptions" {
  description = "Other subscriptions: protocol (email, sqs, lambda, https, ...) and endpoint. E-mail ones stay pending until someone confirms."
  type = list(object({
    protocol = string
    endpoint = string
  }))
  default = []
}

variable "tags" {
  description = "Tags for the topic."
  type        = map(string)
  default     = {}
}
