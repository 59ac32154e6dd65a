variable "name_prefix" {
  description = "Fleet name prefix: the dashboard's name, the alarms' prefix and the Fleet dimension of the custom metrics."
  type        = string
}

variable "metrics_namespace" {
  description = "Namespace of the workers' custom metrics (EVENTFLEET_CLOUDWATCH_NAMESPACE)."
  type        = string
}

variable "alarm_topic_arn" {
  description = "Topic every alarm notifies (ALARM and OK)."
  type        = string
}

variable "queue_name" {
  description = "Name of the event queue."
  type        = string
}

variable "dead_letter_queue_name" {
  description = "Name of the dead-letter queue."
  type        = string
}

variable "alb_arn_suffix" {
  description = "ARN suffix of the load balancer."
  type        = string
}

variable "target_group_arn_suffix" {
  description = "ARN suffix of the ingress target group."
  type        = string
}

variable "cluster_name" {
  description = "ECS cluster name."
  type        = string
}

variable "ingress_service_name" {
  description = "ECS service name of the ingress."
  type        = string
}

variable "worker_service_name" {
  description = "ECS service name of the workers."
  type        = string
}

variable "worker_min_count" {
  description = "Minimum worker tasks; fewer running for 5 minutes alarms."
  type        = number
}

variable "oldest_message_age_threshold_seconds" {
  description = "Alarm when the oldest waiting event is older than this for 5 minutes."
  type        = number
  default     = 300
}

variable "error_rate_threshold_percent" {
  description = "Alarm when more than this percentage of ingress requests answer 5xx for 5 minutes."
  type        = number
  default     = 5
}

variable "p95_latency_threshold_seconds" {
  description = "Alarm when the ingress p95 response time is above this for 5 minutes."
  type        = number
  default     = 1
}

variable "tags" {
  description = "Tags for the alarms."
  type        = map(string)
  default     = {}
}
