variable "actions" {
  description = "The actions refused without TLS (\"s3:*\", \"sqs:*\", \"sns:Publish\")."
  type        = list(string)
}

variable "resources" {
  description = "The resources the policy is attached to."
  type        = list(string)
}
