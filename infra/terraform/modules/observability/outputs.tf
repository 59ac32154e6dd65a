output "dashboard_name" {
  description = "CloudWatch dashboard name."
  value       = aws_cloudwatch_dashboard.this.dashboard_name
}

output "alarm_names" {
  description = "Names of the alarms."
  value       = concat([for a in aws_cloudwatch_metric_alarm.expression : a.alarm_name], [for a in aws_cloudwatch_metric_alarm.metric : a.alarm_name])
}
