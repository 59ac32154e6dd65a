# Inputs of the eventfleet fleet. Required ones have no default; docs/deployment.md lists them all.

# Naming and placement ---------------------------------------------------------------------------------------------

variable "region" {
  description = "AWS region of the fleet."
  type        = string
  default     = "us-east-1"
}

variable "name_prefix" {
  description = "Prefix of every name (queues, tables, topics, services, roles). Must equal the processes' EVENTFLEET_NAME_PREFIX, which this configuration sets; `eventfleet tables describe --json` prints the names the code derives from it."
  type        = string
  default     = "eventfleet"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name_prefix))
    error_message = "3 to 24 characters: lower-case letters, digits and hyphens, starting with a letter (load balancer and target group names are limited to 32)."
  }
}

variable "tags" {
  description = "Extra tags on every resource (added to Project, Fleet and ManagedBy)."
  type        = map(string)
  default     = {}
}

variable "vpc_id" {
  description = "Existing VPC to run in."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets (two or more availability zones) for the internet-facing load balancer."
  type        = list(string)

  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "An application load balancer needs subnets in at least two availability zones."
  }
}

variable "private_subnet_ids" {
  description = "Private subnets for the tasks, with outbound HTTPS (NAT gateway, or VPC endpoints for SQS, DynamoDB, SNS, CloudWatch, Logs, ECR, SSM/Secrets Manager plus a NAT for Slack)."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 1
    error_message = "At least one private subnet."
  }
}

variable "allowed_ingress_cidrs" {
  description = "IPv4 ranges allowed to reach the load balancer on 443. Senders (Slack, GitHub, SNS) are on the internet, so the default is everyone; the WAF filters."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "task_egress_cidrs" {
  description = "Where the tasks may open HTTPS (443) connections: AWS APIs, Slack, the SNS certificate host."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

# Public endpoint --------------------------------------------------------------------------------------------------

variable "domain_name" {
  description = "Public host name of the ingress (e.g. events.example.com). Senders post to https://<domain_name>/...; the alarm topic subscribes https://<domain_name>/sns."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate (same region) covering domain_name."
  type        = string
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone in which to create domain_name as an alias of the load balancer; null to manage DNS elsewhere."
  type        = string
  default     = null
}

# Image ------------------------------------------------------------------------------------------------------------

variable "image_tag" {
  description = "Tag of the eventfleet image to run (e.g. the git commit). Tags are immutable in the repository; `latest` is refused."
  type        = string

  validation {
    condition     = var.image_tag != "latest" && length(var.image_tag) > 0
    error_message = "Give an immutable tag (e.g. the git commit), not `latest`."
  }
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64: the architecture the image was built for."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "X86_64 or ARM64."
  }
}

# Ingress ----------------------------------------------------------------------------------------------------------

variable "ingress_count" {
  description = "Ingress tasks (fixed; at least 2 for availability)."
  type        = number
  default     = 2
}

variable "ingress_cpu" {
  description = "CPU units per ingress task (1024 = 1 vCPU)."
  type        = number
  default     = 512
}

variable "ingress_memory" {
  description = "Memory (MiB) per ingress task."
  type        = number
  default     = 1024
}

variable "ingress_body_limit_bytes" {
  description = "EVENTFLEET_BODY_LIMIT_BYTES of the ingress: largest request body (larger is 413). An SQS message holds at most 256 KiB, and the envelope carries the body as a JSON string (escaped) plus its metadata, so keep this well below 256 KiB."
  type        = number
  default     = 131072

  validation {
    condition     = var.ingress_body_limit_bytes >= 1024 && var.ingress_body_limit_bytes <= 196608
    error_message = "1024 to 196608 bytes (192 KiB): an event must fit one 256 KiB SQS message with its envelope."
  }
}

variable "waf_rate_limit_per_ip" {
  description = "Requests per client IP per 5 minutes before the WAF answers 429, outside the sender paths (/hooks/, /slack/, /sns: there senders sign, and the ingress's own per-IP budget, EVENTFLEET_RATE_LIMIT_PER_IP, set to the same number, counts only requests that fail verification)."
  type        = number
  default     = 1000
}

# Workers ----------------------------------------------------------------------------------------------------------

variable "worker_min_count" {
  description = "Fewest worker tasks (at least 1: backlog per task divides by the running count)."
  type        = number
  default     = 2
}

variable "worker_max_count" {
  description = "Most worker tasks. More tasks than active message groups add no throughput (one message in flight per group)."
  type        = number
  default     = 10
}

variable "worker_backlog_per_task" {
  description = "Target of the worker scaling: waiting messages per running task. Set it to (acceptable queueing delay in s) × (events one task handles per s)."
  type        = number
  default     = 50
}

variable "worker_scale_in_cooldown_s" {
  description = "Seconds after a scale-in before the next one."
  type        = number
  default     = 300
}

variable "worker_scale_out_cooldown_s" {
  description = "Seconds after a scale-out before the next one."
  type        = number
  default     = 60
}

variable "worker_cpu" {
  description = "CPU units per worker task."
  type        = number
  default     = 512
}

variable "worker_memory" {
  description = "Memory (MiB) per worker task."
  type        = number
  default     = 1024
}

variable "worker_concurrency" {
  description = "Handlers running at once per worker task (EVENTFLEET_WORKER_CONCURRENCY)."
  type        = number
  default     = 16
}

# Queue timing (shared by the queues and the processes) -----------------------------------------------------------

variable "max_attempts" {
  description = "Failed attempts after which a worker dead-letters an event (EVENTFLEET_MAX_ATTEMPTS), counted in its retry record."
  type        = number
  default     = 5

  validation {
    condition     = var.max_attempts >= 1 && var.max_attempts <= 100
    error_message = "max_attempts is 1 to 100."
  }
}

variable "max_receive_count" {
  description = "Receives after which SQS itself moves a message to the DLQ (redrive maxReceiveCount and EVENTFLEET_MAX_RECEIVE_COUNT): a backstop far above max_attempts, because a message waiting behind failing ones of its group is received with each of their attempts, and because a store outage makes every delivery a receive."
  type        = number
  default     = 50

  validation {
    condition     = var.max_receive_count >= 2 && var.max_receive_count <= 1000
    error_message = "max_receive_count is 2 to 1000 (and at least twice max_attempts, checked in main.tf)."
  }
}

variable "visibility_timeout_s" {
  description = "Visibility timeout of the queues and EVENTFLEET_VISIBILITY_TIMEOUT_S; above handler_timeout_s + heartbeat_margin_s."
  type        = number
  default     = 30
}

variable "handler_timeout_s" {
  description = "EVENTFLEET_HANDLER_TIMEOUT_S: a handler running longer fails its attempt."
  type        = number
  default     = 20
}

variable "heartbeat_margin_s" {
  description = "Margin between the handler timeout and the visibility timeout for the heartbeat's visibility extension to land."
  type        = number
  default     = 5
}

variable "drain_timeout_s" {
  description = "EVENTFLEET_DRAIN_TIMEOUT_S: on SIGTERM, how long in-flight handlers (workers) and requests (ingress) may finish. ECS stopTimeout is this plus 10 s for the worker, plus 5 s for the ingress (Fargate allows at most 120)."
  type        = number
  default     = 25

  validation {
    condition     = var.drain_timeout_s >= 6 && var.drain_timeout_s <= 110
    error_message = "6 to 110 seconds: above the 5 s receive wait, and stopTimeout (drain + 10) may not exceed Fargate's 120."
  }
}

variable "message_retention_s" {
  description = "How long an event may wait on the queue before SQS drops it (default 4 days; the DLQ keeps 14 days)."
  type        = number
  default     = 345600
}

# Slack and SNS routing --------------------------------------------------------------------------------------------

variable "slack_signing_secret_arn" {
  description = "ARN of the SSM SecureString parameter or Secrets Manager secret holding the Slack signing secret (EVENTFLEET_SLACK_SIGNING_SECRET of the ingress). Only the ARN enters the state."
  type        = string
}

variable "slack_bot_token_arn" {
  description = "ARN of the SSM SecureString parameter or Secrets Manager secret holding the Slack bot token (EVENTFLEET_SLACK_BOT_TOKEN of the workers). Only the ARN enters the state."
  type        = string
}

variable "slack_app_token_arn" {
  description = "ARN of the SSM SecureString parameter or Secrets Manager secret holding a Slack app-level token (xapp-, scope connections:write): set, the ingress tasks receive Slack over Socket Mode (EVENTFLEET_SLACK_APP_TOKEN). Null: HTTP only. Only the ARN enters the state."
  type        = string
  default     = null
}

variable "slack_socket_connections" {
  description = "EVENTFLEET_SLACK_SOCKET_CONNECTIONS: Socket Mode connections per ingress task. Slack allows an app 10 in all, so ingress_count x this must be at most 10."
  type        = number
  default     = 2

  validation {
    condition     = var.slack_socket_connections >= 1 && var.slack_socket_connections <= 10
    error_message = "slack_socket_connections must be 1 to 10 (Slack's limit per app)."
  }
}

variable "secrets_kms_key_arns" {
  description = "Customer managed keys that encrypt those secrets; empty when they use the AWS managed aws/ssm or aws/secretsmanager key."
  type        = list(string)
  default     = []
}

variable "default_channel" {
  description = "EVENTFLEET_DEFAULT_CHANNEL: Slack channel of SNS topics without a channel of their own."
  type        = string
  default     = "#eventfleet"
}

variable "alarm_channel" {
  description = "Slack channel the fleet's own CloudWatch alarms (the alarm topic) are posted to."
  type        = string
  default     = "#eventfleet-alarms"
}

variable "extra_sns_topics" {
  description = "Other SNS topics the ingress accepts (AWS Budgets, AWS Health, other teams' alarms): topic ARN => Slack channel. Subscribe each to https://<domain_name>/sns yourself."
  type        = map(string)
  default     = {}
}

variable "subscribe_ingress_to_alarm_topic" {
  description = "Subscribe https://<domain_name>/sns to the alarm topic (after both services are up; the fleet confirms the subscription itself)."
  type        = bool
  default     = true
}

variable "alarm_extra_subscriptions" {
  description = "More subscribers of the alarm topic (e.g. an e-mail list or a pager), so alarms about the ingress itself reach a person: protocol and endpoint."
  type = list(object({
    protocol = string
    endpoint = string
  }))
  default = []
}

variable "ops_subscriptions" {
  description = "Subscribers of the ops topic, where the workers publish dead-letter notices: protocol and endpoint."
  type = list(object({
    protocol = string
    endpoint = string
  }))
  default = []
}

# Observability ----------------------------------------------------------------------------------------------------

variable "metrics_namespace" {
  description = "CloudWatch namespace of the workers' metrics (EVENTFLEET_CLOUDWATCH_NAMESPACE); the dashboard and the IAM condition use the same."
  type        = string
  default     = "Eventfleet"
}

variable "log_filter" {
  description = "EVENTFLEET_LOG of both services (tracing EnvFilter syntax)."
  type        = string
  default     = "info"
}

variable "schedules_file" {
  description = "EVENTFLEET_SCHEDULES_FILE of the ingress: the path of a schedules file inside the image (docs/configuration.md, \"Schedules\"); null runs no schedules."
  type        = string
  default     = null
}

variable "otel_exporter_otlp_endpoint" {
  description = "OTEL_EXPORTER_OTLP_ENDPOINT of both services: an HTTPS OTLP endpoint (the tasks may only open port 443, see task_egress_cidrs); null exports no traces."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Days to keep the services' and the WAF's logs in CloudWatch Logs."
  type        = number
  default     = 30
}

variable "alb_access_log_retention_days" {
  description = "Days to keep the load balancer's access logs in S3."
  type        = number
  default     = 90
}

variable "oldest_message_age_alarm_s" {
  description = "Alarm when the oldest waiting event is older than this (seconds) for 5 minutes."
  type        = number
  default     = 300
}

variable "ingress_5xx_alarm_percent" {
  description = "Alarm when more than this percentage of ingress requests answer 5xx for 5 minutes."
  type        = number
  default     = 5
}

variable "ingress_p95_alarm_s" {
  description = "Alarm when the ingress p95 response time is above this (seconds) for 5 minutes."
  type        = number
  default     = 1
}

# Safety -----------------------------------------------------------------------------------------------------------

variable "deletion_protection" {
  description = "Deletion protection on the tables and the load balancer. Turn off (and apply) before a deliberate destroy."
  type        = bool
  default     = true
}

variable "wait_for_steady_state" {
  description = "Make `terraform apply` wait until each service's deployment has finished (and the circuit breaker has rolled back a failed one)."
  type        = bool
  default     = true
}

# Console ----------------------------------------------------------------------------------------------------------

variable "console" {
  description = "The operator console behind the load balancer, signed in by authenticate-oidc; null (the default) for none. listener_port is its HTTPS port on the load balancer; allowed_cidrs the operators' networks; oidc the identity provider's endpoints and client id (its secret is console_oidc_client_secret)."
  type = object({
    listener_port = optional(number, 8443)
    allowed_cidrs = list(string)
    oidc = object({
      issuer                 = string
      authorization_endpoint = string
      token_endpoint         = string
      user_info_endpoint     = string
      client_id              = string
    })
  })
  default = null

  validation {
    condition     = var.console == null || (try(var.console.listener_port, 8443) != 443 && length(try(var.console.allowed_cidrs, [])) > 0)
    error_message = "console.listener_port must not be 443 (the ingress's listener), and console.allowed_cidrs must name the operators' networks."
  }
}

variable "console_oidc_client_secret" {
  description = "Client secret of the console's OIDC client (the ALB's authenticate-oidc needs it in the clear; it is kept in the state, which the bootstrap encrypts)."
  type        = string
  default     = null
  sensitive   = true
}
