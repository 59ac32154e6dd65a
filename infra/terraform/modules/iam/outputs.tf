output "ingress_task_role_arn" {
  description = "Task role of the ingress."
  value       = aws_iam_role.ingress.arn
}

output "worker_task_role_arn" {
  description = "Task role of the workers."
  value       = aws_iam_role.worker.arn
}

output "operator_policy_arn" {
  description = "Managed policy for operators running the eventfleet CLI against the fleet (attach it to their role)."
  value       = aws_iam_policy.operator.arn
}

output "console_task_role_arn" {
  description = "Task role of the console (null when it is off)."
  value       = one(aws_iam_role.console[*].arn)
}
