output "state_bucket" {
  description = "The `bucket` of the root configuration's backend.hcl."
  value       = aws_s3_bucket.state.id
}

output "lock_table" {
  description = "The `dynamodb_table` of the root configuration's backend.hcl."
  value       = aws_dynamodb_table.lock.name
}

output "state_kms_key_arn" {
  description = "The `kms_key_id` of the root configuration's backend.hcl."
  value       = module.state_key.arn
}

output "region" {
  description = "The `region` of the root configuration's backend.hcl."
  value       = var.region
}

output "backend_hcl" {
  description = "A backend.hcl for the root configuration (set `key` per environment)."
  value       = <<-EOT
    bucket         = "${aws_s3_bucket.state.id}"
    key            = "eventfleet/production/terraform.tfstate"
    region         = "${var.region}"
    dynamodb_table = "${aws_dynamodb_table.lock.name}"
    encrypt        = true
    kms_key_id     = "${module.state_key.arn}"
  EOT
}
