variable "name" {
  description = "Name of the load balancer, web ACL and derived resources (the fleet's name prefix; at most 24 characters so that `<name>-ingress` fits a target group name)."
  type        = string

  validation {
    condition     = length(var.name) <= 24
    error_message = "At most 24 characters: load balancer and target group names are limited to 32."
  }
}

variable "vpc_id" {
  description = "VPC of the load balancer and the targets."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets (at least two availability zones) of the internet-facing load balancer."
  type        = list(string)
}

variable "allowed_cidrs" {
  description = "IPv4 ranges allowed to reach port 443 (senders are on the internet: Slack, GitHub, SNS)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "certificate_arn" {
  description = "ACM certificate of the ingress's public host name."
  type        = string
}

variable "target_port" {
  description = "Port the ingress container listens on."
  type        = number
  default     = 8080
}

variable "target_security_group_id" {
  description = "Security group of the ingress tasks (the load balancer may connect to it on target_port)."
  type        = string
}

variable "deregistration_delay_seconds" {
  description = "Seconds a draining ingress task keeps receiving in-flight requests' answers before deregistration completes."
  type        = number
  default     = 30
}

variable "rate_limit_per_ip" {
  description = "Requests per client IP per 5 minutes before the WAF answers 429."
  type        = number
  default     = 1000
}

variable "deletion_protection" {
  description = "Refuse to delete the load balancer (turn off deliberately before a destroy)."
  type        = bool
  default     = true
}

variable "access_log_retention_days" {
  description = "Days to keep the load balancer's access logs in S3."
  type        = number
  default     = 90
}

variable "log_retention_days" {
  description = "Days to keep WAF logs in CloudWatch Logs."
  type        = number
  default     = 30
}

variable "logs_kms_key_arn" {
  description = "Customer managed key that encrypts the WAF log group."
  type        = string
}

variable "tags" {
  description = "Tags for everything the module creates."
  type        = map(string)
  default     = {}
}
