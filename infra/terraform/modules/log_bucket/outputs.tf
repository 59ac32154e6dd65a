output "id" {
  description = "Bucket name (its id)."
  value       = aws_s3_bucket.this.id
}

output "arn" {
  description = "Bucket ARN."
  value       = aws_s3_bucket.this.arn
}

output "policy_id" {
  description = "The bucket policy's id: depend on it before a service starts delivering."
  value       = aws_s3_bucket_policy.this.id
}
