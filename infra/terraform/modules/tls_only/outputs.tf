output "json" {
  description = "The policy document, for `source_policy_documents` or a resource policy of its own."
  value       = data.aws_iam_policy_document.this.json
}
