variable "region" {
  description = "Region of the state bucket and the lock table."
  type        = string
  default     = "us-east-1"
}

variable "state_bucket_name" {
  description = "Name of the state bucket (globally unique, e.g. <company>-eventfleet-tfstate). The access-log bucket is <name>-access-logs."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,50}[a-z0-9]$", var.state_bucket_name))
    error_message = "3 to 52 characters of lower-case letters, digits, dots and hyphens (the access-log bucket adds 12)."
  }
}

variable "lock_table_name" {
  description = "Name of the DynamoDB lock table."
  type        = string
  default     = "eventfleet-terraform-locks"
}

variable "state_version_retention_days" {
  description = "Days to keep earlier versions of state files."
  type        = number
  default     = 90
}

variable "access_log_retention_days" {
  description = "Days to keep the state bucket's access logs."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}
