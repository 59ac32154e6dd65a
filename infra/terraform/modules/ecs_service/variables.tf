variable "name_prefix" {
  description = "Fleet name prefix; the service is named <name_prefix>-<name>."
  type        = string
}

variable "name" {
  description = "Service (and container) name: ingress or worker."
  type        = string
}

variable "cluster_arn" {
  description = "ARN of the ECS cluster."
  type        = string
}

variable "cluster_name" {
  description = "Name of the ECS cluster (for the scaling target and the Container Insights metrics)."
  type        = string
}

variable "image" {
  description = "Container image (repository URL and tag)."
  type        = string
}

variable "image_repository_arn" {
  description = "ARN of the ECR repository the execution role may pull from."
  type        = string
}

variable "command" {
  description = "Container command (arguments to the image's `eventfleet` entry point), e.g. [\"ingress\"]."
  type        = list(string)
}

variable "cpu" {
  description = "Task CPU units (256 = 0.25 vCPU)."
  type        = number
  default     = 512
}

variable "memory" {
  description = "Task memory (MiB)."
  type        = number
  default     = 1024
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64: must match the image."
  type        = string
  default     = "X86_64"
}

variable "environment" {
  description = "Plain environment variables of the container."
  type        = map(string)
  default     = {}
}

variable "secrets" {
  description = "Environment variables filled from SSM Parameter Store or Secrets Manager at task start: name => parameter or secret ARN. Only ARNs are in the Terraform state, never values."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for arn in values(var.secrets) : can(regex("^arn:[^:]+:(ssm|secretsmanager):", arn))])
    error_message = "Secrets are SSM parameter ARNs (arn:aws:ssm:...:parameter/...) or Secrets Manager ARNs (arn:aws:secretsmanager:...)."
  }
}

variable "secrets_kms_key_arns" {
  description = "Customer managed keys that encrypt the secrets (empty when they use the AWS managed aws/ssm or aws/secretsmanager keys)."
  type        = list(string)
  default     = []
}

variable "container_ports" {
  description = "Ports the container listens on."
  type        = list(number)
  default     = []
}

variable "health_check_command" {
  description = "Container health check command (ECS syntax, e.g. [\"CMD\", \"curl\", \"-fsS\", \"http://127.0.0.1:8080/health\"]), or null."
  type        = list(string)
  default     = null
}

variable "stop_timeout_seconds" {
  description = "Seconds between SIGTERM and SIGKILL on stop (Fargate: at most 120); above the process's drain timeout."
  type        = number
  default     = 30

  validation {
    condition     = var.stop_timeout_seconds >= 2 && var.stop_timeout_seconds <= 120
    error_message = "Fargate accepts a stopTimeout of 2 to 120 seconds."
  }
}

variable "task_role_arn" {
  description = "Task role (the process's AWS permissions), from the iam module."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the tasks."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the tasks (with a NAT gateway or VPC endpoints for the AWS APIs, and a route to Slack)."
  type        = list(string)
}

variable "egress_https_cidrs" {
  description = "Where the tasks may open HTTPS connections (AWS APIs, Slack, the SNS certificate host)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "load_balancer" {
  description = "Target group to register the tasks in, the container port, and the load balancer's security group (allowed in on that port); null for none."
  type = object({
    target_group_arn  = string
    container_port    = number
    security_group_id = string
  })
  default = null
}

variable "health_check_grace_period_seconds" {
  description = "Seconds a new task's load balancer health checks are ignored."
  type        = number
  default     = 30
}

variable "min_count" {
  description = "Fewest running tasks (also the initial desired count)."
  type        = number
  default     = 2
}

variable "max_count" {
  description = "Most running tasks."
  type        = number
  default     = 2
}

variable "backlog_scaling" {
  description = "Target tracking on backlog per task (visible messages of queue_name ÷ running tasks); null for a fixed count."
  type = object({
    queue_name                 = string
    target_backlog_per_task    = number
    scale_in_cooldown_seconds  = optional(number, 300)
    scale_out_cooldown_seconds = optional(number, 60)
  })
  default = null
}

variable "wait_for_steady_state" {
  description = "Make `terraform apply` wait until the service's deployment is complete."
  type        = bool
  default     = true
}

variable "log_group_name" {
  description = "CloudWatch log group of the container."
  type        = string
}

variable "log_retention_days" {
  description = "Days to keep the container's logs."
  type        = number
  default     = 30
}

variable "logs_kms_key_arn" {
  description = "Customer managed key that encrypts the log group."
  type        = string
}

variable "tags" {
  description = "Tags for everything the module creates."
  type        = map(string)
  default     = {}
}
