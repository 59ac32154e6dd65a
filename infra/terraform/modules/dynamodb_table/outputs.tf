output "name" {
  description = "Table name."
  value       = aws_dynamodb_table.this.name
}

output "arn" {
  description = "Table ARN."
  value       = aws_dynamodb_table.this.arn
}

output "index_arns" {
  description = "ARNs of the table's global secondary indexes (for Query permissions)."
  value       = [for index in var.global_secondary_indexes : "${aws_dynamodb_table.this.arn}/index/${index.name}"]
}
