# The Terraform state store of the eventfleet configurations: a versioned S3 bucket encrypted with a customer
# managed key, public access blocked, TLS only, access-logged to a second bucket; and the DynamoDB lock table.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
}

module "state_key" {
  source      = "../modules/kms_key"
  alias       = replace(var.state_bucket_name, ".", "-")
  description = "Terraform state of the eventfleet configurations (S3 bucket and lock table)"
}

# State bucket -----------------------------------------------------------------------------------------------------

resource "aws_s3_bucket" "state" {
  #checkov:skip=CKV_AWS_144:State is versioned and recoverable in-region (noncurrent versions kept); cross-region replication is an organisation-wide DR decision that needs a second region's bucket and key, out of scope of this bootstrap.
  #checkov:skip=CKV2_AWS_62:Nothing consumes object events of the state bucket; changes are audited through the access logs and CloudTrail.
  bucket = var.state_bucket_name

  # Losing the state means re-importing every resource; make deleting the bucket a deliberate act.
  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_s3_bucket_ownership_controls" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "state" {
  bucket                  = aws_s3_bucket.state.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "state" {
  bucket = aws_s3_bucket.state.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = module.state_key.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    id     = "keep-history"
    status = "Enabled"

    filter {}

    # Earlier versions of a state file are the way back from a bad apply or a corrupted state.
    noncurrent_version_expiration {
      noncurrent_days = var.state_version_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.state]
}

resource "aws_s3_bucket_logging" "state" {
  bucket        = aws_s3_bucket.state.id
  target_bucket = module.access_logs.id
  target_prefix = "state/"
}

module "state_tls_only" {
  source    = "../modules/tls_only"
  actions   = ["s3:*"]
  resources = [aws_s3_bucket.state.arn, "${aws_s3_bucket.state.arn}/*"]
}

resource "aws_s3_bucket_policy" "state" {
  bucket     = aws_s3_bucket.state.id
  policy     = module.state_tls_only.json
  depends_on = [aws_s3_bucket_public_access_block.state]
}

# Access-log bucket of the state bucket ------------------------------------------------------------------------------

module "access_logs" {
  source = "../modules/log_bucket"

  name           = "${var.state_bucket_name}-access-logs"
  retention_days = var.access_log_retention_days

  deliveries = [{
    sid            = "S3LogsTheStateBucket"
    principal_type = "Service"
    principals     = ["logging.s3.amazonaws.com"]
    prefix         = "state/"
    conditions = [
      { test = "ArnLike", variable = "aws:SourceArn", values = [aws_s3_bucket.state.arn] },
      { test = "StringEquals", variable = "aws:SourceAccount", values = [local.account_id] },
    ]
  }]
}

# These resources were this module's own before the log_bucket module; existing state moves, nothing is replaced.
moved {
  from = aws_s3_bucket.access_logs
  to   = module.access_logs.aws_s3_bucket.this
}

moved {
  from = aws_s3_bucket_ownership_controls.access_logs
  to   = module.access_logs.aws_s3_bucket_ownership_controls.this
}

moved {
  from = aws_s3_bucket_public_access_block.access_logs
  to   = module.access_logs.aws_s3_bucket_public_access_block.this
}

moved {
  from = aws_s3_bucket_versioning.access_logs
  to   = module.access_logs.aws_s3_bucket_versioning.this
}

moved {
  from = aws_s3_bucket_server_side_encryption_configuration.access_logs
  to   = module.access_logs.aws_s3_bucket_server_side_encryption_configuration.this
}

moved {
  from = aws_s3_bucket_lifecycle_configuration.access_logs
  to   = module.access_logs.aws_s3_bucket_lifecycle_configuration.this
}

moved {
  from = aws_s3_bucket_policy.access_logs
  to   = module.access_logs.aws_s3_bucket_policy.this
}

# Lock table -------------------------------------------------------------------------------------------------------

resource "aws_dynamodb_table" "lock" {
  name                        = var.lock_table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "LockID"
  deletion_protection_enabled = true

  attribute {
    name = "LockID"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = module.state_key.arn
  }
}
