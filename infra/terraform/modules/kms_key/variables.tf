variable "alias" {
  description = "Alias of the key, without the `alias/` prefix."
  type        = string
}

variable "description" {
  description = "What the key protects (shown in the KMS console)."
  type        = string
}

variable "service_statements" {
  description = "Extra key-policy statements for AWS service principals that use the key on their own behalf (e.g. logs.<region>.amazonaws.com), each with its conditions."
  type = list(object({
    sid      = string
    services = list(string)
    actions  = list(string)
    conditions = optional(list(object({
      test     = string
      variable = string
      values   = list(string)
    })), [])
  }))
  default = []
}

variable "rotation_period_in_days" {
  description = "Automatic rotation period of the key material (90 to 2560 days)."
  type        = number
  default     = 365
}

variable "deletion_window_in_days" {
  description = "Waiting period before a scheduled deletion of the key takes effect (7 to 30 days)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags for the key."
  type        = map(string)
  default     = {}
}
