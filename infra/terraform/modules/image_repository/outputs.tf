output "arn" {
  description = "Repository ARN."
  value       = aws_ecr_repository.this.arn
}

output "url" {
  description = "Repository URL (registry/name), what `docker push` takes."
  value       = aws_ecr_repository.this.repository_url
}

output "name" {
  description = "Repository name."
  value       = aws_ecr_repository.this.name
}
