output "queue_arn" {
  description = "ARN of the event queue."
  value       = aws_sqs_queue.this.arn
}

output "queue_url" {
  description = "URL of the event queue."
  value       = aws_sqs_queue.this.url
}

output "queue_name" {
  description = "Name of the event queue."
  value       = aws_sqs_queue.this.name
}

output "dead_letter_arn" {
  description = "ARN of the dead-letter queue."
  value       = aws_sqs_queue.dead_letter.arn
}

output "dead_letter_url" {
  description = "URL of the dead-letter queue."
  value       = aws_sqs_queue.dead_letter.url
}

output "dead_letter_name" {
  description = "Name of the dead-letter queue."
  value       = aws_sqs_queue.dead_letter.name
}
