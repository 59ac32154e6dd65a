output "dashboard_name" {
  description = "CloudWatch dashboard name."
  value       = aws_cloudwatch_dashboard.this.dashboard_name
}

output "alarm_names" {
  description = "Names of the alarms."
  value = [
    aws_cloudwatch_metric_alarm.dead_letters.alarm_name,
    aws_cloudwatch_metric_alarm.oldest_message_age.alarm_name,
    aws_cloudwatch_metric_alarm.ingress_5xx_rate.alarm_name,
    aws_cloudwatch_metric_alarm.ingress_p95_latency.alarm_name,
    aws_cloudwatch_metric_alarm.ingress_unhealthy_targets.alarm_name,
    aws_cloudwatch_metric_alarm.workers_running.alarm_name,
  ]
}
