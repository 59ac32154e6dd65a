variable "name" {
  description = "Bucket name."
  type        = string
}

variable "retention_days" {
  description = "Days a log object is kept."
  type        = number

  validation {
    condition     = var.retention_days >= 1
    error_message = "Keep logs at least a day."
  }
}

variable "deliveries" {
  description = "Who writes logs into the bucket: each may s3:PutObject under its key prefix (\"state/\", \"alb/AWSLogs/<account>/\"), with optional conditions."
  type = list(object({
    sid            = string
    principal_type = string
    principals     = list(string)
    prefix         = string
    conditions = optional(list(object({
      test     = string
      variable = string
      values   = list(string)
    })), [])
  }))
}

variable "tags" {
  description = "Tags of the bucket."
  type        = map(string)
  default     = {}
}
