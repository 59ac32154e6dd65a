output "ingress_url" {
  description = "Public base URL of the ingress (point the Slack app, webhooks and SNS subscriptions at it)."
  value       = "https://${var.domain_name}"
}

output "sns_endpoint" {
  description = "HTTPS endpoint for SNS subscriptions."
  value       = "https://${var.domain_name}/sns"
}

output "load_balancer_dns_name" {
  description = "DNS name of the load balancer: domain_name must resolve to it (an alias record is made when route53_zone_id is set)."
  value       = module.edge.alb_dns_name
}

output "image_repository_url" {
  description = "ECR repository to push the eventfleet image to."
  value       = module.image_repository.url
}

output "image" {
  description = "Image the services run."
  value       = local.image
}

output "cluster_name" {
  description = "ECS cluster name."
  value       = module.cluster.name
}

output "ingress_service_name" {
  description = "ECS service of the ingress."
  value       = module.ingress.service_name
}

output "worker_service_name" {
  description = "ECS service of the workers."
  value       = module.worker.service_name
}

output "task_definitions" {
  description = "Task definition ARNs (with revision) deployed by this apply: the rollback targets of the next one."
  value = {
    ingress = module.ingress.task_definition_arn
    worker  = module.worker.task_definition_arn
  }
}

output "log_groups" {
  description = "CloudWatch log groups of the services."
  value = {
    ingress = module.ingress.log_group_name
    worker  = module.worker.log_group_name
  }
}

output "queue_urls" {
  description = "URLs of the event queue and the DLQ."
  value = {
    events       = module.events_queue.queue_url
    dead_letters = module.events_queue.dead_letter_url
  }
}

output "table_names" {
  description = "DynamoDB tables by role."
  value = {
    idempotency   = module.idempotency_table.name
    audit         = module.audit_table.name
    retries       = module.retries_table.name
    webhooks      = module.webhooks_table.name
    alarm_threads = module.alarm_threads_table.name
    event_log     = module.event_log_table.name
  }
}

output "alarm_topic_arn" {
  description = "Topic the fleet's CloudWatch alarms notify."
  value       = module.alarm_topic.arn
}

output "ops_topic_arn" {
  description = "Topic the workers publish operational notifications to."
  value       = module.ops_topic.arn
}

output "dashboard_url" {
  description = "CloudWatch dashboard."
  value       = "https://${var.region}.console.aws.amazon.com/cloudwatch/home?region=${var.region}#dashboards:name=${module.observability.dashboard_name}"
}

output "alarm_names" {
  description = "CloudWatch alarms."
  value       = module.observability.alarm_names
}

output "operator_policy_arn" {
  description = "IAM policy with what the eventfleet CLI needs against this fleet (dlq, events, hooks, status); attach it to the operators' role."
  value       = module.iam.operator_policy_arn
}

output "web_acl_arn" {
  description = "WAF web ACL on the load balancer."
  value       = module.edge.web_acl_arn
}

output "operator_environment" {
  description = "Environment for running the eventfleet CLI against this fleet (with operator credentials)."
  value = {
    EVENTFLEET_BACKEND     = "aws"
    EVENTFLEET_NAME_PREFIX = var.name_prefix
    AWS_REGION             = var.region
  }
}

output "console_url" {
  description = "The operator console (null when var.console is null)."
  value       = var.console == null ? null : "https://${var.domain_name}:${var.console.listener_port}"
}
