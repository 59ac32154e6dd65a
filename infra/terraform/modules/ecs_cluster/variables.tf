variable "name" {
  description = "Cluster name."
  type        = string
}

variable "container_insights" {
  description = "Container Insights level: `enabled` or `enhanced` (the worker scaling needs at least `enabled`)."
  type        = string
  default     = "enabled"

  validation {
    condition     = contains(["enabled", "enhanced"], var.container_insights)
    error_message = "container_insights is enabled or enhanced: the worker scaling policy reads RunningTaskCount from Container Insights."
  }
}

variable "tags" {
  description = "Tags for the cluster."
  type        = map(string)
  default     = {}
}
